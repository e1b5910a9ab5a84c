"""Score the workspace of a task imported from MLGym with MLGym's own command for its entrypoint.

stsc scores every task by running ``python <this script> --submission_file submission.csv`` in the
agent's workspace, with the task's private folder readable at ``$STSC_PRIVATE_DIR``. For a task
imported from MLGym that folder holds the task's unedited evaluation script and
``mlgym_evaluation.json`` (``entrypoint``, ``script``: its file name there, ``evaluation_path``:
its path in the workspace). The evaluation script runs as if it were the workspace's copy: its
``__file__``, ``sys.argv[0]`` and import path are the workspace path, so it imports the agent's
modules (``strategy.py``, ...) exactly as under MLGym, but its code cannot have been edited.

    entrypoint              command                                             metrics line
    CSVSubmissionTasks      evaluate.py --submission_file <file>                the whole stdout
    PythonSubmissionTasks   evaluate.py                                         the whole stdout
    ModelSubmissionTasks    evaluate.py --config_fname <the submitted config>    first line starting with {
    LMSubmissionTasks       torchrun --nproc_per_node=<gpus> --standalone ...   first line starting with {

Whole-stdout entrypoints pass the output through unchanged (stsc then requires exactly one JSON
object, as MLGym does); the others print only the metrics line. Exit status: the evaluation's, or 1
with the reason on stderr when the private folder, a model submission or the metrics line is missing.
"""

import argparse
import json
import os
import subprocess
import sys

SPEC_FILE = "mlgym_evaluation.json"
WHOLE_OUTPUT = ("CSVSubmissionTasks", "PythonSubmissionTasks")

# Runs the pristine script (argv[1]) under the workspace path (argv[2]) with the remaining arguments,
# in the real __main__ module, so what it defines can be pickled (multiprocessing with fork). Its
# __spec__ names __main__, so a spawned child never re-runs the workspace copy (which the agent can
# edit) to find those definitions: it fails instead.
BOOTSTRAP = (
    "def _boot():\n"
    "    import builtins, importlib.machinery, os, sys\n"
    "    source, path = sys.argv[1], sys.argv[2]\n"
    "    sys.argv = [path] + sys.argv[3:]\n"
    "    sys.path[0] = os.path.dirname(path)\n"
    "    with open(source, encoding='utf-8') as f:\n"
    "        code = compile(f.read(), path, 'exec')\n"
    "    namespace = sys.modules['__main__'].__dict__\n"
    "    namespace.clear()\n"
    "    namespace.update(__name__='__main__', __file__=path, __builtins__=builtins, __doc__=None,\n"
    "                     __package__=None, __loader__=None,\n"
    "                     __spec__=importlib.machinery.ModuleSpec('__main__', None))\n"
    "    exec(code, namespace)\n"
    "_boot()\n"
)


def fail(message):
    sys.stderr.write(message.rstrip("\n") + "\n")
    return 1


def first_yaml(workspace):
    """The first ``*.yaml`` file under the workspace (sorted walk), as MLGym's model tasks submit."""
    for folder, dirs, files in os.walk(workspace):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".yaml"):
                return os.path.join(folder, name)
    return None


def gpu_count():
    try:
        out = subprocess.run(["nvidia-smi", "--list-gpus"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.strip()) if out.returncode == 0 else 0


def command(entrypoint, source, path, submission_file, config_fname=None):
    """The argv that runs the evaluation, or a string saying why it cannot run. A model task
    evaluates ``config_fname`` (the config its agent was told it submits) when the spec names one."""
    boot = [sys.executable, "-c", BOOTSTRAP, source, path]
    if entrypoint == "CSVSubmissionTasks":
        return boot + ["--submission_file", submission_file]
    if entrypoint == "PythonSubmissionTasks":
        return boot
    if entrypoint == "ModelSubmissionTasks":
        if config_fname:
            config = os.path.join(os.getcwd(), config_fname)
            if not os.path.isfile(config):
                return (
                    f"No valid submission artefact found: write {config_fname} and the model's checkpoints."
                )
        else:
            config = first_yaml(os.getcwd())
        if config is None:
            return "No valid submission artefact found: write the model's config .yaml and checkpoints."
        return boot + ["--config_fname", config]
    if entrypoint == "LMSubmissionTasks":
        nproc = max(1, gpu_count())
        return ["torchrun", f"--nproc_per_node={nproc}", "--standalone", "--no-python"] + boot
    return f"unknown MLGym task entrypoint {entrypoint!r}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submission_file", default="submission.csv")
    args = parser.parse_args(argv)
    private = os.environ.get("STSC_PRIVATE_DIR")
    if not private or not os.path.isfile(os.path.join(private, SPEC_FILE)):
        return fail(
            "STSC_PRIVATE_DIR is not set or holds no task spec: run this through the sandbox's evaluate step"
        )
    with open(os.path.join(private, SPEC_FILE), encoding="utf-8") as f:
        spec = json.load(f)
    source = os.path.join(private, spec["script"])
    path = os.path.join(os.getcwd(), spec["evaluation_path"])
    argv_or_reason = command(spec["entrypoint"], source, path, args.submission_file, spec.get("config_fname"))
    if isinstance(argv_or_reason, str):
        return fail(argv_or_reason)
    done = subprocess.run(argv_or_reason, capture_output=True, text=True)
    sys.stderr.write(done.stderr)
    if spec["entrypoint"] in WHOLE_OUTPUT:
        sys.stdout.write(done.stdout)
        return done.returncode
    line = next((ln.strip() for ln in done.stdout.splitlines() if ln.strip().startswith("{")), None)
    if done.returncode != 0 or line is None:
        sys.stderr.write(done.stdout)
        return done.returncode or fail("The evaluation printed no metrics line (a line starting with '{').")
    sys.stdout.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
