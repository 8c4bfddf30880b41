"""Inferia as an installable package: the wheel carries every file the code reads at run time and no test, its
declared dependencies cover what the code imports and admit requirements.txt's pins, and, end to end, the wheel
installed into a fresh venv outside the checkout runs `inferia init` and `inferia start all` and streams a chat
completion."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

import pytest
from openai import APIError, OpenAI
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from inferia_runtime import embedded
from tests.kit.ports import port_reserve
from tests.kit.processes import TestProcess, http_ok
from tests.kit.waiting import eventually

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PACKAGES = ("apps", "inferia_site", "inferia_runtime", "inferia_cli", "inferia_sim", "celery_app")
# Packaged from the repository root into inferia_site/ (setup.py).
ASSET_DIRS = ("templates", "static")
# Built with, never imported: `make` installs the checkout with --no-build-isolation.
BUILD_TOOLS = {"wheel"}
# Everything that would point Inferia at the test suite's servers instead of its embedded ones, or at this checkout.
FOREIGN_VARIABLES = (
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "INFERIA_CACHE_REDIS_URL",
    "INFERIA_CHANNELS_REDIS_URL",
    "INFERIA_SUPERADMIN_EMAIL",
    "INFERIA_SUPERADMIN_PASSWORD",
    "PYTHONPATH",
    "VIRTUAL_ENV",
    "DJANGO_SETTINGS_MODULE",
)


def _pins() -> dict[str, tuple[Requirement, bool]]:
    """requirements.txt by canonical name: the pin, and whether it sits in the runtime part (before the tools)."""
    pins: dict[str, tuple[Requirement, bool]] = {}
    runtime = True
    for line in (REPO / "requirements.txt").read_text().splitlines():
        if line.startswith("# Test and lint"):
            runtime = False
        if line.strip() and not line.startswith("#"):
            requirement = Requirement(line)
            pins[canonicalize_name(requirement.name)] = (requirement, runtime)
    return pins


def _declared() -> dict[str, Requirement]:
    requirements = (Requirement(text) for text in PYPROJECT["project"]["dependencies"])
    return {canonicalize_name(requirement.name): requirement for requirement in requirements}


def _closure(roots: dict[str, Requirement]) -> set[str]:
    """The declared dependencies and everything they require (extras included), as installed here."""
    seen: set[str] = set()
    pending = list(roots.values())
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
            continue
        if name in seen and not requirement.extras:
            continue
        seen.add(name)
        for text in importlib.metadata.requires(requirement.name) or []:
            needed = Requirement(text)
            wanted = [{"extra": extra} for extra in requirement.extras] or [{"extra": ""}]
            if needed.marker is None or any(needed.marker.evaluate(env) for env in wanted):
                needed.marker = None
                pending.append(needed)
    return seen


def _imported_distributions() -> dict[str, str]:
    """Each third-party distribution the shipped code imports (at any level), with one module that imports it."""
    providers = importlib.metadata.packages_distributions()
    found: dict[str, str] = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    top = module.split(".")[0]
                    if top in sys.stdlib_module_names or top in PACKAGES:
                        continue
                    for distribution in providers.get(top, [f"<no distribution provides {top}>"]):
                        found.setdefault(canonicalize_name(distribution), str(path.relative_to(REPO)))
    return found


def test_every_pinned_distribution_the_code_imports_is_declared():
    pins, declared = _pins(), _declared()
    imported = _imported_distributions()

    undeclared = {name: where for name, where in imported.items() if name in pins and name not in declared}

    assert not undeclared, f"imported by the shipped code, pinned, but not in pyproject's dependencies: {undeclared}"


def test_everything_the_code_imports_comes_with_the_declared_dependencies():
    closure = _closure(_declared())

    missing = {name: where for name, where in _imported_distributions().items() if name not in closure}

    assert not missing, f"imported by the shipped code, installed by no declared dependency: {missing}"


def test_each_declared_range_admits_the_pinned_version_with_the_same_extras():
    pins = _pins()

    for name, requirement in _declared().items():
        assert name in pins, f"{name} is declared but requirements.txt does not pin it"
        pin, runtime = pins[name]
        (version,) = (spec.version for spec in pin.specifier)
        assert runtime, f"{name} is a runtime dependency: pin it above requirements.txt's test and lint tools"
        assert requirement.specifier.contains(version), f"{requirement} refuses the pinned {name}=={version}"
        assert requirement.extras == pin.extras, f"{name}: {requirement.extras} declared, {pin.extras} pinned"


def test_each_runtime_pin_is_declared_or_required_by_a_declared_dependency():
    closure = _closure(_declared())

    stray = [name for name, (_, runtime) in _pins().items() if runtime and name not in closure | BUILD_TOOLS]

    assert not stray, f"pinned as runtime, but no declared dependency needs them: {stray}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """`python -m build` (sdist, then the wheel from it), as README says, with this venv's pinned setuptools."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(REPO)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("inferia-*.whl")
    return built


def test_the_wheel_carries_every_file_the_code_reads_and_no_test(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    data = [
        path.relative_to(REPO).as_posix()
        for package in PACKAGES
        for path in (REPO / package).rglob("*")
        if path.is_file() and path.suffix not in {".py", ".pyc", ".c"} and "__pycache__" not in path.parts
    ]
    assets = [
        "inferia_site/" + path.relative_to(REPO).as_posix()
        for name in ASSET_DIRS
        for path in (REPO / name).rglob("*")
        if path.is_file()
    ]

    assert {"apps/policies/lua/admit.lua", "inferia_cli/demo_data/handbook.md"} <= set(data)
    assert "inferia_site/templates/console/base.html" in assets
    assert not set(data + assets) - names
    assert not [name for name in names if name.startswith(("tests/", "docs/", "scripts/", "docker/"))]
    assert "manage.py" not in names


def _run(argv: list[str], *, env: dict[str, str], cwd: Path, timeout: float) -> str:
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done.stdout


@pytest.mark.slow
@pytest.mark.e2e
def test_the_wheel_in_a_fresh_venv_serves_a_streamed_chat_completion(wheel, tmp_path):
    venv, run, data_dir = tmp_path / "venv", tmp_path / "run", tmp_path / "data"
    run.mkdir()
    python, inferia = venv / "bin" / "python", venv / "bin" / "inferia"
    # pip takes no extras in a constraints file; the pins pick the versions the suite runs on (from pip's cache).
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(
        "\n".join(f"{canonicalize_name(pin.name)}{pin.specifier}" for pin, _ in _pins().values()) + "\n"
    )
    env = {name: value for name, value in os.environ.items() if name not in FOREIGN_VARIABLES}
    env |= {"INFERIA_DATA_DIR": str(data_dir), "INFERIA_WORKER_CONCURRENCY": "1", "NO_COLOR": "1"}
    env |= {"INFERIA_UPSTREAM_ALLOW_PRIVATE": "true"}  # the simulated node listens on loopback
    env |= {"INFERIA_SUPERADMIN_EMAIL": "admin@wheel.test", "INFERIA_SUPERADMIN_PASSWORD": "wheel-admin-password"}

    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    _run([str(python), "-m", "pip", "install", "-q", "-c", str(constraints), str(wheel)], env=env, cwd=run, timeout=600)
    print(f"fresh venv with the wheel: {time.monotonic() - started:.0f} s")

    location = _run(
        [str(python), "-c", "import inferia_site; print(inferia_site.__file__)"], env=env, cwd=run, timeout=60
    )
    assert Path(location.strip()).is_relative_to(venv)
    port, sim_port = port_reserve(), port_reserve()
    platform = None
    try:
        assert "initialised" in _run([str(inferia), "init"], env=env, cwd=run, timeout=300)
        # What `inferia demo` adds to init: an organisation with an inference key and a simulated deployment.
        seed = (
            "import os, django; from pathlib import Path; "
            "os.environ['DJANGO_SETTINGS_MODULE'] = 'inferia_site.settings'; django.setup(); "
            "from inferia_cli.demo import demo_ensure; "
            "print(demo_ensure(data_dir=Path(os.environ['INFERIA_DATA_DIR']), "
            "admin_email=os.environ['INFERIA_SUPERADMIN_EMAIL']).keys['inference'])"
        )
        key = _run([str(python), "-c", seed], env=env, cwd=run, timeout=120).strip().splitlines()[-1]
        argv = [str(inferia), "start", "all", "--port", str(port), "--sim-port", str(sim_port)]
        platform = TestProcess(argv, env=env, cwd=run, name="inferia-start-all")
        platform.wait_line("Inferia is serving on", timeout=180)

        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0, timeout=30)

        def streamed() -> str:
            stream = client.chat.completions.create(
                model="demo-chat", messages=[{"role": "user", "content": "Hello!"}], stream=True
            )
            return "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices).strip()

        # The worker provisions the simulated replicas after start: until one is healthy /v1 answers 503.
        eventually(
            streamed,
            timeout=180,
            interval=1,
            what="a streamed chat completion",
            ignoring=(APIError,),
            check=platform.assert_running,
        )
        # Templates and static files come from the wheel too.
        assert http_ok(f"http://127.0.0.1:{port}/console/login/")
        assert http_ok(f"http://127.0.0.1:{port}/static/console/console.css")

        assert platform.interrupt() == 0, platform.output[-3000:]
    finally:
        if platform is not None:
            platform.kill_everything()
        embedded.stop(data_dir)
