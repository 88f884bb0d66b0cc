"""A tools/ script as the Python tests use it: loaded as a module, and run as a program."""
import importlib.util
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def load(script):
    """The script at `script` (a pathlib.Path) as a module named after its file."""
    spec = importlib.util.spec_from_file_location(script.stem, script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run(script, args):
    """The script run by this Python with `args`: the CompletedProcess, output captured as text."""
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True)
