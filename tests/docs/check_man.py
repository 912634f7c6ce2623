#!/usr/bin/env python3
"""Checks the manual pages in packaging/man against the programs' own --help.

For every program, command and subcommand (discovered from the "Subcommands:" lists of
`--help`, starting at `flowmark --help` and `flowmarkd --help`):
  - the command has a page: the page whose NAME section lists `flowmark-CMD` or `CMD`;
  - every option of its --help (long and short) is an item (.TP tag) of the page's
    OPTIONS section;
  - every exit code its --help lists is an item of the page's EXIT STATUS section;
  - every environment variable its --help lists appears in the page.
For every page:
  - it renders without a single warning (`groff -ww -man -Tutf8 -z`);
  - a link page (`.so man1/PAGE`) points to a page of the same section that exists;
  - .TH names the file (name and section), the source is ASCII, the usual sections exist;
  - every flowmark page it refers to, NAME(N), exists;
  - CMake installs it (--installed lists what CMakeLists.txt installs).

For the configuration page, flowmark.toml(5), with --source-dir:
  - every key the service reads (src/daemon: Section calls such as s.integer("port", ...))
    and every key of the example packaging/flowmark.toml, commented out or not, is an item;
  - every source and backend type (factories.add("NAME", ...)) has its `type = "NAME"`
    subsection, and the keys its own file reads are items of that subsection;
  - every flowd key flowmarkd knows (src/daemon/flowd_translate.cpp) is in FLOWD
    COMPATIBILITY, and every flowd-go key (src/daemon/flowd_go/flowd_go_translate.cpp) in
    FLOWD-GO COMPATIBILITY.

Usage: check_man.py --man-dir DIR --flowmark BIN --flowmarkd BIN [--source-dir DIR]
                    [--installed PAGE ...]
Every problem is printed as "PAGE: what is wrong"; the exit status is 1 when there is any.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys

FAILURES = []


def fail(where, message):
    FAILURES.append(f"{where}: {message}")


# ---- roff source --------------------------------------------------------------------------

ESCAPES = [
    (re.compile(r"\\f(\[[^\]]*\]|\(..|.)"), ""),  # font changes
    (re.compile(r"\\\((em|en)"), "-"),
    (re.compile(r"\\\(->"), "->"),
    (re.compile(r"\\\(aq"), "'"),
    (re.compile(r"\\\(dq"), '"'),
    (re.compile(r"\\[&|^]"), ""),
    (re.compile(r"\\-"), "-"),
    (re.compile(r"\\e"), "\\\\"),
]


def plain(text, keep_quotes=False):
    """Roff text with escapes resolved and macro quotes removed, for searching."""
    for pattern, repl in ESCAPES:
        text = pattern.sub(repl, text)
    return text if keep_quotes else text.replace('"', " ")


class Page:
    def __init__(self, path):
        self.path = path
        self.file = os.path.basename(path)
        with open(path, "rb") as f:
            raw = f.read()
        # A link page (`.so man1/flowmark-mcast.1`): another name for a page.
        m = re.fullmatch(rb"\.so (man[1-8]/)?([\w.-]+)\n?", raw)
        self.link = m.group(2).decode() if m else None
        try:
            self.source = raw.decode("ascii")
        except UnicodeDecodeError as e:
            fail(self.file, f"not ASCII at byte {e.start} (write roff escapes such as \\(em)")
            self.source = raw.decode("utf-8", "replace")
        self.lines = self.source.splitlines()
        self.sections = {}  # ".SH" title -> list of source lines
        current = None
        for line in self.lines:
            m = re.match(r'\.SH\s+"?([^"]*)"?\s*$', line)
            if m:
                current = m.group(1).strip().upper()
                self.sections[current] = []
            elif current is not None:
                self.sections[current].append(line)
        self.names = self._names()

    def _names(self):
        body = " ".join(self.sections.get("NAME", []))
        head = plain(body).split(" - ")[0]
        return [n.strip() for n in head.split(",") if n.strip()]

    def tags(self, section):
        """The item tags (.TP/.TQ next line, .IP argument) of a section, as plain text."""
        lines = self.sections.get(section, [])
        out = []
        for i, line in enumerate(lines):
            if re.match(r"\.(TP|TQ)\b", line) and i + 1 < len(lines):
                tag = lines[i + 1]
                out.append(plain(re.sub(r"^\.[A-Z]+\s*", "", tag)))
            elif line.startswith(".IP "):
                out.append(plain(line[4:]))
        return out

    def subsection_tags(self, section, title):
        """The item tags of the .SS subsection `title` (plain text) inside .SH `section`."""
        out, inside, lines = [], False, self.sections.get(section, [])
        for i, line in enumerate(lines):
            if line.startswith(".SS"):
                head = plain(line[3:], keep_quotes=True).strip()
                if len(head) > 1 and head[0] == head[-1] == '"':
                    head = head[1:-1]  # the macro's quotes around the title
                inside = head == title
            elif inside and re.match(r"\.(TP|TQ)\b", line) and i + 1 < len(lines):
                out.append(plain(re.sub(r"^\.[A-Z]+\s*", "", lines[i + 1])))
        return out

    def text(self, section=None, keep_quotes=False):
        lines = self.lines if section is None else self.sections.get(section, [])
        return plain("\n".join(re.sub(r"^\.[A-Za-z]+\s*", "", l) for l in lines), keep_quotes)


def word(token):
    return re.compile(r"(?<![\w-])" + re.escape(token) + r"(?![\w-])")


def check_page(page, groff, files):
    stem, _, section = page.file.rpartition(".")
    if page.link is not None:
        if page.link not in files:
            fail(page.file, f".so {page.link}: no such page in packaging/man")
        elif page.link.rpartition(".")[2] != section:
            fail(page.file, f".so {page.link}: a link stays in its section ({section})")
        return
    m = re.match(r'\.TH\s+"?([^"\s]+)"?\s+(\d)', page.source)
    if not m:
        fail(page.file, "no .TH line")
    else:
        if m.group(1).upper() != stem.upper():
            fail(page.file, f".TH names {m.group(1)}, not {stem.upper()}")
        if m.group(2) != section:
            fail(page.file, f".TH gives section {m.group(2)}, the file name {section}")
    required = ["NAME", "SYNOPSIS", "DESCRIPTION", "SEE ALSO"]
    if section in ("1", "8"):
        required += ["OPTIONS", "EXIT STATUS"]
    for s in required:
        if s not in page.sections:
            fail(page.file, f"no {s} section")
    if not page.names:
        fail(page.file, "the NAME section names nothing (NAME, NAME \\- what it is)")
    # Render exactly as man does, with every warning on.
    r = subprocess.run([groff, "-ww", "-man", "-Tutf8", "-z", page.path],
                       capture_output=True, text=True, env=dict(os.environ, LC_ALL="C.UTF-8"))
    for line in (r.stderr or "").splitlines():
        fail(page.file, f"groff: {line}")
    if r.returncode != 0 and not r.stderr:
        fail(page.file, f"groff exited {r.returncode}")


def check_references(pages):
    files = {p.file for p in pages}
    for page in pages:
        refs = set(re.findall(r"\b(flowmark[\w.-]*)\s*\((\d)\)", page.text()))
        for name, sec in sorted(refs):
            if f"{name}.{sec}" not in files:
                fail(page.file, f"refers to {name}({sec}), which has no page in packaging/man")


# ---- --help -------------------------------------------------------------------------------

def run_help(argv):
    shown = " ".join([os.path.basename(argv[0])] + argv[1:] + ["--help"])
    try:
        r = subprocess.run(argv + ["--help"], capture_output=True, text=True, timeout=30,
                           env=dict(os.environ, LC_ALL="C.UTF-8", COLUMNS="80"))
    except subprocess.TimeoutExpired:
        fail(shown, "did not finish within 30 s")
        return shown, ""
    if r.returncode != 0:
        fail(shown, f"exited {r.returncode}: {r.stderr.strip()}")
    return shown, r.stdout


def block(help_text, title):
    """The indented lines under a "Title:" line, up to the next blank line."""
    lines = help_text.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == title:
            out = []
            for l in lines[i + 1:]:
                if not l.strip():
                    break
                out.append(l)
            return out
    return []


def options_of(help_text):
    opts = []
    for line in block(help_text, "Options:"):
        m = re.match(r"^  (-\S+)", line)
        if m:
            names = m.group(1).split(",")
            opts += [n.split("=")[0] for n in names if n.startswith("-")]
    return opts


def subcommands_of(help_text):
    subs = []
    for line in block(help_text, "Subcommands:"):
        m = re.match(r"^  ([a-z][\w-]*)(\s{2,}|$)", line)
        if m:
            subs.append(m.group(1))
    return subs


def exit_codes_of(help_text):
    m = re.search(r"Exit (codes|status):", help_text, re.IGNORECASE)
    if not m:
        return []
    chunk = help_text[m.end():].split("\n\n")[0]
    codes = re.findall(r"(?:^|[:;,\n])[ \t]*(\d{1,3})[ \t]+(?=[A-Za-z(-])", chunk)
    return sorted(set(codes), key=int)


def environment_of(help_text):
    out = []
    for line in block(help_text, "Environment (a flag beats the environment, which beats "
                                 "the default):"):
        m = re.match(r"^\s+([A-Z][A-Z0-9_]+)\s", line)
        if m:
            out.append(m.group(1))
    return out


class Checker:
    def __init__(self, pages):
        self.pages = pages
        self.by_name = {}
        for p in pages:
            for n in p.names:
                self.by_name.setdefault(n, p)
        self.reported = set()
        self.helps = 0
        self.options = 0

    def page_for(self, program, command):
        for name in ([f"{program}-{command}", command] if command else [program]):
            if name in self.by_name:
                return self.by_name[name]
        return None

    def report(self, page, key, message):
        if (page.file, key) not in self.reported:
            self.reported.add((page.file, key))
            fail(page.file, message)

    def check_help(self, page, argv):
        shown, text = run_help(argv)
        self.helps += 1
        options_tags = page.tags("OPTIONS")
        whole = page.text()
        if text and not options_of(text):
            # Every CLI11 help has at least -h,--help: finding none means this parser no
            # longer understands the layout, and every check below would pass vacuously.
            fail(shown, "no options found under \"Options:\": has the --help layout changed? "
                        "(update tests/docs/check_man.py)")
        for opt in options_of(text):
            self.options += 1
            if any(word(opt).search(t) for t in options_tags):
                continue
            where = ("mentioned, but not an item (.TP) of OPTIONS"
                     if word(opt).search(whole) else "not in the page")
            self.report(page, opt, f"missing option {opt} (from `{shown}`; {where})")
        exit_tags = page.tags("EXIT STATUS")
        for code in exit_codes_of(text):
            if not any(re.search(rf"(?<!\d){code}(?!\d)", t) for t in exit_tags):
                self.report(page, "exit " + code,
                            f"missing exit code {code} in EXIT STATUS (from `{shown}`)")
        for var in environment_of(text):
            if not word(var).search(whole):
                self.report(page, var, f"missing environment variable {var} (from `{shown}`)")
        return text

    def walk(self, page, argv):
        text = self.check_help(page, argv)
        for sub in subcommands_of(text):
            self.walk(page, argv + [sub])

    def program(self, binary, name):
        top = self.page_for(name, None)
        if top is None:
            fail(name, f"no page: none of packaging/man/*.[1-8] has {name} in its NAME section")
            return
        text = self.check_help(top, [binary])
        for command in subcommands_of(text):
            page = self.page_for(name, command)
            if page is None:
                fail(f"{name} {command}",
                     f"no page: none of packaging/man/*.[1-8] has {name}-{command} or "
                     f"{command} in its NAME section")
                continue
            self.walk(page, [binary, command])


# ---- flowmark.toml(5) against the code that reads the configuration ------------------------

KEY_CALL = re.compile(
    r"\b(?:s|section|map)(?:\.|->)\w+\(\s*\"([a-z][a-z0-9_]*)\"|"  # s.integer("port", ...)
    r"\b\w+\((?:s|section), \"([a-z][a-z0-9_]*)\"")                # read_port_ranges(s, "ports")
TYPE_CALL = re.compile(r"factories\.add\(\s*\"([a-z][a-z-]*)\"")
FLOWD_KEY = re.compile(r"^\s*\{\"([A-Z][A-Z0-9_]+)\",", re.MULTILINE)  # the kKeys table
# flowd-go's keys: the lists of known keys, keys(m, {"bindAddress", "bindPort"}).
FLOWD_GO_KEYS = re.compile(r"\bkeys\(\*?\w+,\s*\{([^}]*)\}")


def check_config_page(pages, source_dir):
    page = next((p for p in pages if "flowmark.toml" in p.names), None)
    if page is None:
        fail("flowmark.toml", "no page: none of packaging/man/*.5 has flowmark.toml in NAME")
        return
    tags = [t for s in page.sections for t in page.tags(s)]
    quoted = page.text(keep_quotes=True)
    keys = {}  # key -> where it is read
    daemon = os.path.join(source_dir, "src", "daemon")
    for root, _, files in os.walk(daemon):
        for f in sorted(files):
            if not f.endswith(".cpp"):
                continue
            path = os.path.join(root, f)
            with open(path, encoding="utf-8") as fh:
                code = fh.read()
            rel = os.path.relpath(path, source_dir)
            for m in KEY_CALL.finditer(code):
                keys.setdefault(m.group(1) or m.group(2), rel)
            types = TYPE_CALL.findall(code)
            for t in types:
                if not re.search(r'type\s*=\s*"' + re.escape(t) + '"', quoted):
                    fail(page.file, f'missing type = "{t}" (registered in {rel})')
            # A source's or backend's own keys belong to its subsection, not just anywhere.
            kind = next((k for k in ("sources", "backends") if f"{os.sep}{k}{os.sep}" in path),
                        None)
            if kind and len(types) == 1:
                title = f'type = "{types[0]}"'
                own = page.subsection_tags(kind.upper(), title)
                for key in sorted({m.group(1) or m.group(2) for m in KEY_CALL.finditer(code)}):
                    if own and not any(word(key).search(t) for t in own):
                        fail(page.file, f"key {key} of {kind[:-1]} {title} is not an item of "
                                        f"its subsection (read in {rel})")
                if not own:
                    fail(page.file, f"no items under .SS {title} in {kind.upper()}")
            if f == "flowd_go_translate.cpp":
                flowd_go = page.text("FLOWD-GO COMPATIBILITY")
                for group in FLOWD_GO_KEYS.findall(code):
                    for k in re.findall(r'"(\w+)"', group):
                        if not word(k).search(flowd_go):
                            fail(page.file, f"missing flowd-go key {k} in FLOWD-GO "
                                            f"COMPATIBILITY (known to {rel})")
            if f == "flowd_translate.cpp":
                flowd = page.text("FLOWD COMPATIBILITY")
                for k in FLOWD_KEY.findall(code):
                    if not word(k).search(flowd):
                        fail(page.file, f"missing flowd key {k} in FLOWD COMPATIBILITY "
                                        f"(known to {rel})")
    example = os.path.join(source_dir, "packaging", "flowmark.toml")
    with open(example, encoding="utf-8") as fh:
        for line in fh:
            m = re.match(r"^\s*#?\s*([a-z][a-z0-9_]*)\s*=", line)
            if m:
                keys.setdefault(m.group(1), "packaging/flowmark.toml")
    if not keys:
        fail(page.file, f"found no configuration keys under {daemon}: is --source-dir right?")
    for key, where in sorted(keys.items()):
        if not any(word(key).search(t) for t in tags):
            fail(page.file, f"missing key {key} (read in {where})")
    return len(keys)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--man-dir", required=True)
    ap.add_argument("--flowmark", required=True)
    ap.add_argument("--flowmarkd", required=True)
    ap.add_argument("--source-dir", help="the project's root, to check flowmark.toml(5)")
    ap.add_argument("--installed", nargs="*", default=None,
                    help="the pages CMakeLists.txt installs (file names)")
    a = ap.parse_args()

    groff = shutil.which("groff")
    if groff is None:
        print("check_man: groff not found: install groff-base (scripts/install-deps.sh)")
        return 1
    paths = sorted(os.path.join(a.man_dir, f) for f in os.listdir(a.man_dir)
                   if re.search(r"\.[1-8]$", f))
    pages = [Page(p) for p in paths]
    files = {p.file for p in pages}
    for p in pages:
        check_page(p, groff, files)
    check_references(pages)
    if a.installed is not None:
        installed = {os.path.basename(p) for p in a.installed}
        for p in pages:
            if p.file not in installed:
                fail(p.file, "not installed: add it to the man pages in CMakeLists.txt")
        for f in sorted(installed - {p.file for p in pages}):
            fail(f, "installed by CMakeLists.txt but not in packaging/man")

    nkeys = check_config_page(pages, a.source_dir) if a.source_dir else 0
    checker = Checker(pages)
    checker.program(a.flowmark, "flowmark")
    checker.program(a.flowmarkd, "flowmarkd")

    for f in FAILURES:
        print(f)
    print(f"check_man: {len(pages)} pages, {checker.helps} --help texts, "
          f"{checker.options} options, {nkeys} configuration keys: {len(FAILURES)} problem(s)")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
