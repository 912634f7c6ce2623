#!/usr/bin/env python3
"""Checks that every module includes only the modules below it.

Reads every #include "..." of src/<module>/, include/flowmark/<module>/ and apps/<program>/
and fails, naming file:line, the include and the rule, when a module reaches one it must
not. The layers (docs/architecture.md, "Modules and the direction of their dependencies"):

    core                          (depends on nothing of flowmark)
    net        <- core            sockets and name resolution
    mcast      <- core, net       multicast commands
    scitags    <- core, net       flow events, fireflies, registry (never mcast)
    netclient  <- core, net, scitags   STUN, sock_diag
    collector  <- core, scitags   site map, joined flow records, the store (SQLite, PostgreSQL)
    observe    <- core            decoders, flow table (no libpcap)
    capture    <- core, net, observe   (net: where `observe --ipfix` sends its messages)
    bpf        <- core            eBPF loaders
    daemon     <- every module above
    apps/flowmark  <- every module but daemon (the tool does not carry the service)
    apps/flowmarkd <- everything
    apps/common    <- core        what both mains share (header-only: links neither app)
    python         <- core, net, mcast, scitags, observe, capture   the Python module
                      (python/src/), through the public headers only, as C++ users have them

The link lines of CMakeLists.txt are held to the same table (flowmark_<module>, and the
`flowmark` and `flowmarkd` programs).

Inside the daemon, a source or backend includes no other source's or backend's headers
(what two share lives in src/daemon/common/).

Usage: layering_check.py [SOURCE_DIR]        (default: the repository of this script)
Exit status 0 when the tree follows the layers, 1 otherwise.
"""

import pathlib
import re
import sys

ALLOWED = {
    "core": set(),
    "net": {"core"},
    "mcast": {"core", "net"},
    "scitags": {"core", "net"},
    "netclient": {"core", "net", "scitags"},
    "collector": {"core", "scitags"},
    "observe": {"core"},
    "capture": {"core", "net", "observe"},
    "bpf": {"core"},
    "daemon": {"core", "net", "mcast", "scitags", "netclient", "observe", "capture", "bpf",
               "collector"},
    "apps/flowmark": {"core", "net", "mcast", "scitags", "netclient", "observe", "capture",
                      "bpf", "collector"},
    "apps/common": {"core"},
    "python": {"core", "net", "mcast", "scitags", "observe", "capture"},
    "apps/flowmarkd": {"core", "net", "mcast", "scitags", "netclient", "observe", "capture",
                       "bpf", "collector", "daemon"},
}
MODULES = {m for m in ALLOWED if not m.startswith("apps/") and m != "python"}

# Includes that break a rule for now, each with its reason. An entry that no longer matches
# anything fails the check too, so that the list only ever shrinks.
EXCEPTIONS: dict[tuple[str, str], str] = {}

# The same for the link lines of CMakeLists.txt: (target, library linked) → reason.
LINK_EXCEPTIONS: dict[tuple[str, str], str] = {}
# CMake targets → the module whose rules apply to them.
TARGETS = {f"flowmark_{m}": m for m in MODULES}
TARGETS.update({"flowmark": "apps/flowmark", "flowmarkd": "apps/flowmarkd",
                "flowmark_python": "python"})
# The CMake files whose link lines are checked.
CMAKE_FILES = ("CMakeLists.txt", "python/CMakeLists.txt")
LINK = re.compile(r"target_link_libraries\(\s*(\S+)([^)]*)\)", re.S)

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')
SOURCE_SUFFIXES = {".cpp", ".hpp", ".h", ".cc", ".c"}
PLUGIN_DIR = re.compile(r"^src/daemon/(sources|backends)/([^/]+)/")


def module_of_file(rel: str):
    """The module a file belongs to, or None when it is not under a checked tree."""
    parts = rel.split("/")
    if parts[0] == "src" and len(parts) > 2 and parts[1] in MODULES:
        return parts[1]
    if parts[:2] == ["include", "flowmark"] and len(parts) > 3 and parts[2] in MODULES:
        return parts[2]
    if parts[0] == "apps" and len(parts) > 2 and f"apps/{parts[1]}" in ALLOWED:
        return f"apps/{parts[1]}"
    if parts[:2] == ["python", "src"] and len(parts) > 2:
        return "python"
    return None


def module_of_include(target: str):
    """The module an include names: "flowmark/<m>/x.hpp" (public) or "<m>/x.hpp" (private,
    from src/). None for a header of the same directory ("firefly_json.hpp")."""
    parts = target.split("/")
    if parts[0] == "flowmark" and len(parts) > 2 and parts[1] in MODULES:
        return parts[1]
    if len(parts) > 1 and parts[0] in MODULES:
        return parts[0]
    return None


def check(root: pathlib.Path):
    problems = []
    used_exceptions = set()
    files = []
    for top in ("src", "include/flowmark", "apps", "python/src"):
        base = root / top
        if base.is_dir():
            files += [p for p in sorted(base.rglob("*")) if p.suffix in SOURCE_SUFFIXES]
    if not files:
        return [f"{root}: no sources found (is this the repository root?)"], 0
    for path in files:
        rel = path.relative_to(root).as_posix()
        module = module_of_file(rel)
        if module is None:
            continue
        plugin = PLUGIN_DIR.match(rel)
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            m = INCLUDE.match(line)
            if not m:
                continue
            target = m.group(1)
            key = (rel, target)
            if key in EXCEPTIONS:
                used_exceptions.add(key)
                continue
            used = module_of_include(target)
            if module == "python" and used is not None and not target.startswith("flowmark/"):
                problems.append(f"{rel}:{number}: the Python module includes the private header "
                                f"\"{target}\"; it wraps the public headers (include/flowmark/) "
                                "only, as C++ users have them")
                continue
            if used is not None and used != module and used not in ALLOWED[module]:
                allowed = ", ".join(sorted(ALLOWED[module])) or "no other module"
                problems.append(f"{rel}:{number}: {module} includes {used} (\"{target}\"); "
                                f"{module} may include only {allowed}")
            if plugin:
                other = PLUGIN_DIR.match("src/" + target)
                if other and other.group(0) != plugin.group(0):
                    problems.append(
                        f"{rel}:{number}: {plugin.group(1)}/{plugin.group(2)} includes the "
                        f"private header \"{target}\" of {other.group(1)}/{other.group(2)}; "
                        "move what they share to src/daemon/common/")
    problems += check_links(root)
    for key, reason in EXCEPTIONS.items():
        if key not in used_exceptions:
            problems.append(f"{key[0]}: the allowed exception for \"{key[1]}\" ({reason}) is "
                            "no longer needed: remove it from EXCEPTIONS in "
                            "tests/layering_check.py")
    return problems, len(files)


def check_links(root: pathlib.Path):
    """The link lines of the top CMakeLists.txt follow the same table: flowmark_<m> links
    only the libraries of the modules <m> may include, the `flowmark` tool not the daemon."""
    problems = []
    used = set()
    for name in CMAKE_FILES:
        cmake = root / name
        if cmake.is_file():
            problems += check_link_lines(name, cmake.read_text(), used)
    for key, reason in LINK_EXCEPTIONS.items():
        if key not in used:
            problems.append(f"CMakeLists.txt: the allowed link {key[0]} → {key[1]} ({reason}) is "
                            "no longer needed: remove it from LINK_EXCEPTIONS in "
                            "tests/layering_check.py")
    return problems


def check_link_lines(name, text, used):
    problems = []
    for m in LINK.finditer(text):
        target = m.group(1)
        module = TARGETS.get(target)
        if module is None:
            continue
        line = text.count("\n", 0, m.start()) + 1
        for lib in re.findall(r"\bflowmark_(\w+)", m.group(2)):
            if lib not in MODULES or lib == module or lib in ALLOWED[module]:
                continue
            if (target, f"flowmark_{lib}") in LINK_EXCEPTIONS:
                used.add((target, f"flowmark_{lib}"))
                continue
            allowed = ", ".join(sorted(ALLOWED[module])) or "no other module"
            problems.append(f"{name}:{line}: {target} links flowmark_{lib}; {module} may "
                            f"depend only on {allowed}")
    return problems


def main() -> int:
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else
                        pathlib.Path(__file__).resolve().parent.parent)
    problems, count = check(root)
    for p in problems:
        print(p)
    if problems:
        print(f"layering: {len(problems)} problem(s) in {count} files")
        return 1
    print(f"layering: {count} files and the link lines of CMakeLists.txt follow the module "
          f"layers ({len(EXCEPTIONS) + len(LINK_EXCEPTIONS)} allowed exception(s))")
    for (rel, target), reason in EXCEPTIONS.items():
        print(f"  allowed: {rel} includes \"{target}\": {reason}")
    for (target, lib), reason in LINK_EXCEPTIONS.items():
        print(f"  allowed: {target} links {lib}: {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
