"""Stepwise installed in someone else's project: the wheel, its dependencies, the `stepwise` command.

The fast tests check pyproject.toml against requirements.txt, the checkout's `streamlit run app.py`
entry and `stepwise app`'s launch. The slow ones build the wheel once (`python -m build`), install
it into a fresh virtual environment (no system site-packages; torch comes from this machine's CPU
file), and use it from outside the checkout as a user would: the command, the imports, the app,
and the example cache test of docs/examples in a project of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from streamlit.testing.v1 import AppTest

import tracer.__main__ as cli
from tests.conftest import _free_port, _healthy

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROMPT = "tom has red balls . ann wants blue hats . what does ann want ?"


def pins(file: str) -> dict[str, str]:
    """name -> exact version of every `name==version` line of a requirements file."""
    found = {}
    for line in (ROOT / file).read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            found[name.lower()] = version
    return found


def library_requirements() -> list[Requirement]:
    project = PYPROJECT["project"]
    extras = [r for group in project["optional-dependencies"].values() for r in group]
    return [Requirement(r) for r in project["dependencies"] + extras]


# ---------------------------------------------------------------------------------------------
# Fast: the configuration and the launch


def test_the_library_ranges_hold_the_releases_the_app_and_ci_pin():
    pinned = pins("requirements.txt")
    for requirement in library_requirements():
        assert requirement.name in pinned, f"{requirement.name} is not pinned in requirements.txt"
        assert pinned[requirement.name] in requirement.specifier, (requirement, pinned[requirement.name])
    assert {r.name for r in library_requirements()} == set(pinned), "a pin the package does not declare"


def test_torch_never_resolves_to_a_newer_release_than_the_cpu_build_on_disk():
    (torch,) = [r for r in library_requirements() if r.name == "torch"]
    spec = SpecifierSet(str(torch.specifier))
    assert "2.13.0+cpu" in spec and "2.13.0" in spec
    assert not any(v in spec for v in ("2.13.1", "2.14.0", "2.14.1", "3.0.0"))


def test_the_checkout_entry_runs_the_app_with_its_pages():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    assert [t.value for t in at.title][:1] == ["Overview"]
    at.switch_page("stepwise_app/pages/kv_cache.py").run()
    assert not at.exception and [t.value for t in at.title][:1] == ["KV cache"]


def test_stepwise_app_runs_streamlit_on_the_packaged_app_with_the_options_given(monkeypatch):
    launched = []

    class Replaced(Exception):
        """os.execv does not return: neither does the fake."""

    def fake_execv(path, command):
        launched.append((path, command))
        raise Replaced

    monkeypatch.setattr(cli.os, "execv", fake_execv)
    monkeypatch.setattr(cli.subprocess, "Popen", lambda *a, **k: pytest.fail("a child server was started"))
    with pytest.raises(Replaced):
        cli.main(["app", "--server.port", "8599"], prog="stepwise")
    ((path, command),) = launched
    assert path == sys.executable
    assert command[:4] == [sys.executable, "-m", "streamlit", "run"]
    assert Path(command[4]) == ROOT / "stepwise_app" / "app.py"
    assert command[5:] == ["--server.port", "8599"]


def test_stepwise_app_without_streamlit_says_to_install_the_app_extra(monkeypatch, capsys):
    real = cli.find_spec
    monkeypatch.setattr(cli, "find_spec", lambda name: None if name == "streamlit" else real(name))
    assert cli.main(["app"]) == cli.EXIT_USAGE
    assert "pip install 'stepwise[app]'" in capsys.readouterr().err


def test_other_commands_still_reject_options_they_do_not_know(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["show", "run.trace", "--server.port", "1"], prog="stepwise")
    assert exit_.value.code == cli.EXIT_USAGE
    assert "stepwise: error: unrecognized arguments: --server.port 1" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Slow: the built wheel in a fresh virtual environment


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    built = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (wheel,) = dist.glob("stepwise-*-py3-none-any.whl")
    return wheel


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv with the wheel (and its app extra) and pytest installed; returns its bin/."""
    home = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(home)], check=True, timeout=300)
    # The exact pins as constraints: the same releases as CI, whatever PyPI has published since.
    # torch==2.13.0 takes this machine's CPU file (2.13.0+cpu), as a bare install of the wheel does.
    installed = subprocess.run(
        [
            str(home / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            f"{wheel}[app]",
            f"pytest=={pins('requirements-dev.txt')['pytest']}",
            "-c",
            str(ROOT / "requirements.txt"),
        ],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    return home / "bin"


@pytest.fixture
def outside(tmp_path) -> dict:
    """subprocess.run arguments for a user's shell: a folder outside the checkout, offline."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return {"cwd": tmp_path, "env": env, "capture_output": True, "text": True, "timeout": 600}


@pytest.mark.slow
def test_the_wheel_holds_the_libraries_the_app_and_the_shipped_models_only(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"tracer", "models", "stepwise_app", f"{wheel.name.split('-py3')[0]}.dist-info"}
    for required in (
        "models/checkpoints/tiny-llama/model.safetensors",
        "models/checkpoints/tiny-bart/tokenizer.json",
        "models/scenarios/side_inputs.py",
        "stepwise_app/pages/overview.py",
        "tracer/plots/generation.py",
    ):
        assert required in names
    # Streamlit reads the settings beside the script it runs: the installed app keeps the checkout's.
    with zipfile.ZipFile(wheel) as archive:
        config = archive.read("stepwise_app/.streamlit/config.toml")
    assert config == (ROOT / ".streamlit" / "config.toml").read_bytes()


@pytest.mark.slow
def test_tracer_and_models_import_from_the_installed_package(venv, outside):
    script = (
        "import json, models, tracer, stepwise_app, torch, transformers\n"
        "print(tracer.__file__, models.__file__, stepwise_app.__file__, sep='\\n')\n"
        "print(torch.__version__, transformers.__version__)\n"
        "print(json.dumps(models.available()))\n"
        "from models import scenarios; print(json.dumps(scenarios.names()))\n"
    )
    result = subprocess.run([str(venv / "python"), "-c", script], **outside)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    site_packages = venv.parent / "lib"
    for path in lines[:3]:
        assert Path(path).is_relative_to(site_packages), path  # the installed copy, not the checkout
    torch_version, transformers_version = lines[3].split()
    assert torch_version.split("+")[0] == pins("requirements.txt")["torch"]  # "2.13.0+cpu" here
    assert transformers_version == pins("requirements.txt")["transformers"]
    assert {"tiny-llama", "tiny-bart"} <= set(json.loads(lines[4]))
    assert "side-inputs" in json.loads(lines[5])


@pytest.mark.slow
def test_the_stepwise_command_records_shows_and_asks_the_doctor(venv, outside, tmp_path):
    stepwise = str(venv / "stepwise")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([stepwise, *args], **outside)

    helped = run("--help")
    assert helped.returncode == 0 and helped.stdout.startswith("usage: stepwise")
    assert "{record,show,doctor,app}" in helped.stdout

    trace_file = tmp_path / "run.trace"
    recorded = run(
        "record", "--model", "tiny-llama", "--prompt", PROMPT, "--max-new-tokens", "6", "--out", "run.trace"
    )
    assert recorded.returncode == 0, recorded.stderr
    assert trace_file.is_file() and "prefill" in recorded.stdout

    shown = run("show", "run.trace", "--json")
    assert shown.returncode == 0, shown.stderr
    summary = json.loads(shown.stdout)
    assert summary["arch"] == "decoder-only" and summary["error"] is None
    assert [s["phase"] for s in summary["steps"]] == ["prefill"] + ["decode"] * (len(summary["steps"]) - 1)
    assert len(summary["sequence_ids"]) == len(summary["prompt_ids"]) + len(summary["steps"])

    assert run("doctor", "--model", "tiny-llama", "--prompt", PROMPT, "--max-new-tokens", "4").returncode == 0
    broken = run("doctor", "--scenario", "side-inputs", "--max-new-tokens", "3")
    assert broken.returncode == 1 and "step 1" in broken.stdout

    missing = run("show", "no-such.trace")
    assert missing.returncode == 2 and "no-such.trace" in missing.stderr


@pytest.mark.slow
def test_stepwise_app_serves_the_installed_app(venv, outside):
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [str(venv / "stepwise"), "app", "--server.port", str(port), "--server.address", "127.0.0.1"],
        cwd=outside["cwd"],
        env=outside["env"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(1200):  # up to two minutes: each round waits on the process, not a sleep
            if _healthy(url):
                break
            try:
                server.wait(timeout=0.1)
                pytest.fail(f"`stepwise app` exited with {server.returncode}")
            except subprocess.TimeoutExpired:
                pass
        else:
            pytest.fail("`stepwise app` did not answer /_stcore/health within two minutes")
    finally:
        server.terminate()
        server.wait(timeout=30)

    # The installed app's script runs as Streamlit runs it: its pages, the shared glue, the models.
    script = (
        "import stepwise_app, pathlib\n"
        "from streamlit.testing.v1 import AppTest\n"
        "app = pathlib.Path(stepwise_app.__file__).parent / 'app.py'\n"
        "at = AppTest.from_file(str(app), default_timeout=120).run()\n"
        "assert not at.exception, [e.value for e in at.exception]\n"
        "print([t.value for t in at.title])\n"
    )
    result = subprocess.run([str(venv / "python"), "-c", script], **outside)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "'Overview'" in result.stdout


@pytest.mark.slow
def test_a_users_project_runs_the_example_cache_test(venv, outside, tmp_path):
    tests = tmp_path / "my-project" / "tests"
    tests.mkdir(parents=True)
    shutil.copy(ROOT / "docs" / "examples" / "test_my_model_cache.py", tests)
    result = subprocess.run(
        [str(venv / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        **{**outside, "cwd": tests.parent},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "3 passed" in result.stdout
