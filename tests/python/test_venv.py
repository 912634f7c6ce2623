"""`python3 -m flowmark.venv VENV`: a virtualenv made by Debian's /usr/bin/python3 imports
flowmark (the package under test: the build tree's here, python3-flowmark's in the package
test) and nothing else of the system's packages; the link is refused where it would be wrong
and removed on request."""
import os
import subprocess
import sys

import pytest

import flowmark


def run(*args, env=None, cwd="/"):
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120, env=env,
                          cwd=cwd)


def module(*args, **kw):
    # The flowmark under test, wherever the subprocess runs (PYTHONPATH may be relative).
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(
        os.path.abspath(flowmark.__file__))))
    env.pop("VIRTUAL_ENV", None)
    env.update(kw.pop("env", {}))
    return run("/usr/bin/python3", "-m", "flowmark.venv", *args, env=env, **kw)


@pytest.fixture
def venv(tmp_path):
    path = str(tmp_path / "venv")
    r = run("/usr/bin/python3", "-m", "venv", "--without-pip", path)
    assert r.returncode == 0, r.stderr
    return path


def in_venv(venv, code):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return run(os.path.join(venv, "bin", "python"), "-c", code, env=env)


def test_venv_gets_flowmark_and_nothing_else(venv, tmp_path):
    code = ("import sys, flowmark, flowmark.scitags; print(flowmark.__file__); "
            "print([p for p in sys.path if 'dist-packages' in p])")
    assert "No module named 'flowmark'" in in_venv(venv, code).stderr
    r = module(venv)
    assert r.returncode == 0, r.stderr
    pkg = os.path.dirname(os.path.realpath(flowmark.__file__))
    link = os.path.join(venv, "lib", "python%d.%d" % sys.version_info[:2], "site-packages",
                        "flowmark")
    assert os.path.realpath(link) == pkg
    assert f"{link} -> {pkg}" in r.stdout
    r = in_venv(venv, code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [os.path.join(link, "__init__.py"), "[]"]
    # Again: nothing to do. Relative to the current directory; $VIRTUAL_ENV as the default.
    assert module(os.path.basename(venv), cwd=os.path.dirname(venv)).returncode == 0
    r = module("--remove", env={"VIRTUAL_ENV": venv})
    assert r.returncode == 0 and f"removed {link}" in r.stdout
    assert not os.path.lexists(link)
    assert "No module named 'flowmark'" in in_venv(venv, code).stderr


def test_refusals(venv, tmp_path):
    r = module()
    assert r.returncode == 2 and "no virtualenv is active" in r.stderr
    r = module(str(tmp_path / "nothing"))
    assert r.returncode == 1 and "is not a virtualenv: it has no bin/python" in r.stderr
    r = module("/usr")
    assert r.returncode == 1 and "is a base interpreter" in r.stderr
    # Something else named flowmark in the virtualenv is never replaced.
    site = os.path.join(venv, "lib", "python%d.%d" % sys.version_info[:2], "site-packages")
    os.makedirs(os.path.join(site, "flowmark"))
    r = module(venv)
    assert r.returncode == 1 and "remove it first" in r.stderr
    assert "is not a link made by flowmark.venv" in module("--remove", venv).stderr
    os.rmdir(os.path.join(site, "flowmark"))
    os.symlink(str(tmp_path), os.path.join(site, "flowmark"))
    r = module(venv)
    assert r.returncode == 1 and "--force replaces it" in r.stderr
    assert module("--force", venv).returncode == 0
    assert in_venv(venv, "import flowmark").returncode == 0
