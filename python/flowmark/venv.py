"""Make `import flowmark` work inside a virtualenv, without the rest of the system's packages:

    /usr/bin/python3 -m flowmark.venv [VENV]        # VENV defaults to $VIRTUAL_ENV

links VENV's site-packages/flowmark to this flowmark package (python3-flowmark's
/usr/lib/python3/dist-packages/flowmark, or whichever copy runs this), after checking that
VENV's Python loads extension modules of the same ABI (python3-flowmark is built for Debian's
/usr/bin/python3: make the virtualenv with `/usr/bin/python3 -m venv VENV`). A link, not a
copy: upgrades of python3-flowmark reach the virtualenv. `--remove` takes the link away.
Exit status 0 on success, 1 when VENV cannot get the module (the message says why), 2 for a
usage error.
"""
import argparse
import json
import os
import subprocess
import sys

import flowmark
from flowmark import _flowmark

_PROBE = ("import json, sys, sysconfig; print(json.dumps({"
          "'purelib': sysconfig.get_path('purelib'), "
          "'ext': sysconfig.get_config_var('EXT_SUFFIX'), "
          "'version': '%d.%d' % sys.version_info[:2], "
          "'venv': sys.prefix != sys.base_prefix}))")


class VenvError(Exception):
    pass


def _python(venv):
    for name in ("python", "python3"):
        python = os.path.join(venv, "bin", name)
        if os.access(python, os.X_OK):
            return python
    raise VenvError(f"{venv} is not a virtualenv: it has no bin/python (make one with "
                        f"`/usr/bin/python3 -m venv {venv}`)")


def _probe(python):
    r = subprocess.run([python, "-I", "-c", _PROBE], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise VenvError(f"{python} does not run: {r.stderr.strip()}")
    return json.loads(r.stdout)


def package_dir():
    """The directory of this flowmark package (what the link points to)."""
    return os.path.dirname(os.path.abspath(flowmark.__file__))


def link(venv, force=False):
    """Links `venv`'s site-packages/flowmark to this package; returns the link's path."""
    venv = os.path.abspath(venv)
    python = _python(venv)
    info = _probe(python)
    if not info["venv"]:
        raise VenvError(f"{venv} is not a virtualenv ({python} is a base interpreter): its "
                        f"site-packages belong to the system")
    ours = os.path.basename(_flowmark.__file__)[len("_flowmark"):]
    if info["ext"] != ours:
        here = "%d.%d" % sys.version_info[:2]
        raise VenvError(
            f"{venv} runs Python {info['version']}, which loads extension modules named "
            f"*{info['ext']}; this flowmark module is *{ours} (Python {here}, "
            f"{sys.executable}): make the virtualenv with that interpreter: "
            f"`{sys.executable} -m venv {venv}`")
    target = package_dir()
    dest = os.path.join(info["purelib"], "flowmark")
    if os.path.islink(dest):
        if os.path.realpath(dest) == os.path.realpath(target):
            return dest
        if not force:
            raise VenvError(f"{dest} already links to {os.readlink(dest)}: --force replaces it")
        os.unlink(dest)
    elif os.path.exists(dest):
        raise VenvError(f"{dest} exists (a flowmark installed into the virtualenv, by pip?): "
                        f"remove it first")
    os.makedirs(info["purelib"], exist_ok=True)
    os.symlink(target, dest)
    r = subprocess.run([python, "-c", "import flowmark; print(flowmark.__version__)"],
                       capture_output=True, text=True, timeout=60, cwd="/")
    if r.returncode != 0:
        os.unlink(dest)
        raise VenvError(f"import flowmark fails in {venv} even with the link (removed again): "
                        f"{r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
    return dest


def unlink(venv):
    """Removes the link link() made; returns its path, or None when there was none."""
    venv = os.path.abspath(venv)
    info = _probe(_python(venv))
    dest = os.path.join(info["purelib"], "flowmark")
    if not os.path.islink(dest):
        if os.path.exists(dest):
            raise VenvError(f"{dest} is not a link made by flowmark.venv: left alone")
        return None
    os.unlink(dest)
    return dest


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="python3 -m flowmark.venv",
        description="Make `import flowmark` work in a virtualenv (a link in its site-packages "
                    "to this flowmark package; nothing else of the system's packages).")
    p.add_argument("venv", nargs="?", default=os.environ.get("VIRTUAL_ENV"),
                   help="the virtualenv's directory (default: $VIRTUAL_ENV, the active one)")
    p.add_argument("--force", action="store_true",
                   help="replace a link to another flowmark package")
    p.add_argument("--remove", action="store_true", help="remove the link instead")
    a = p.parse_args(argv)
    if not a.venv:
        p.error("no VENV given and no virtualenv is active ($VIRTUAL_ENV is not set)")
    try:
        if a.remove:
            dest = unlink(a.venv)
            print(f"removed {dest}" if dest else f"{a.venv} has no flowmark link")
        else:
            dest = link(a.venv, a.force)
            print(f"{dest} -> {package_dir()}: import flowmark works in {a.venv}")
    except (VenvError, OSError) as e:
        print(f"flowmark.venv: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
