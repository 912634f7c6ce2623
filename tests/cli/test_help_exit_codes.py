#!/usr/bin/env python3
"""Every command and subcommand of flowmark and flowmarkd lists its exit codes in --help, each
code with the meaning of the one table (`flowmark --help` prints the whole table); every one
lists 2 (a usage error) and really returns 2 for an unknown flag; 130 and 143 come together.

The commands are discovered from the "Subcommands:" lists of `flowmark --help` and of each
group's --help (as tests/docs/check_man.py does), so a new command is checked without
being named here.

    python3 tests/cli/test_help_exit_codes.py BUILD_DIR
"""
import os
import re
import subprocess
import sys
import unittest

BUILD = sys.argv.pop(1) if len(sys.argv) > 1 else "build/release"
FLOWMARK = os.path.join(BUILD, "flowmark")
FLOWMARKD = os.path.join(BUILD, "flowmarkd")
# Commands that must be found, so that a change of the help layout cannot make the
# discovery (and every check with it) silently find nothing.
EXPECTED = [["mcast", "say"], ["mcast", "recv"], ["mcast", "hear"], ["mcast", "noop"],
            ["multicast", "say"], ["firefly", "send"], ["firefly", "listen"],
            ["firefly", "decode"], ["label", "encode"], ["label", "decode"], ["registry"],
            ["stun"], ["observe"], ["report"]]


def help_text(argv):
    r = subprocess.run(argv + ["--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=10)
    if r.returncode != 0:
        raise AssertionError(f"{argv} --help exited {r.returncode}: {r.stderr}")
    return r.stdout


def subcommands(text):
    """The names of the "Subcommands:" list of a --help (up to the next blank line)."""
    lines = text.split("\nSubcommands:\n", 1)
    if len(lines) != 2:
        return []
    names = []
    for line in lines[1].splitlines():
        if not line.strip():
            break
        m = re.match(r"^  ([a-zA-Z][\w-]*)(\s{2,}|$)", line)
        if m:
            names.append(m.group(1))
    return names


def discover(argv):
    """argv and every command under it, depth first: [[], ["mcast"], ["mcast", "say"], ...]."""
    found = [[]]
    for name in subcommands(help_text(argv)):
        found += [[name] + rest for rest in discover(argv + [name])]
    return found


def exit_codes(text):
    """{code: text} of the "Exit codes:" block (continuation lines joined)."""
    lines = text.split("Exit codes:\n", 1)
    if len(lines) != 2:
        return None
    codes, last = {}, None
    for line in lines[1].splitlines():
        m = re.match(r"^  (\d+) +(.*)$", line)
        if m:
            last = int(m.group(1))
            codes[last] = m.group(2)
        elif line.startswith("       ") and last is not None:
            codes[last] += " " + line.strip()
        else:
            break
    return codes


class HelpListsExitCodes(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.table = exit_codes(help_text([FLOWMARK]))
        cls.commands = [c for c in discover([FLOWMARK]) if c]

    def test_the_table_has_the_multicast_numbers(self):
        self.assertIsNotNone(self.table)
        for code in (0, 1, 2, 68, 69, 70, 77, 130, 143):
            self.assertIn(code, self.table)

    def test_discovery_finds_every_command(self):
        found = [[w.lower() for w in c] for c in self.commands]
        for c in EXPECTED:
            self.assertIn(c, found, f"flowmark {' '.join(c)} not found from `flowmark --help`")
        if "bpf" in subcommands(help_text([FLOWMARK])):
            for c in (["bpf", "status"], ["bpf", "clean"]):
                self.assertIn(c, found)

    def check(self, argv):
        shown = " ".join([os.path.basename(argv[0])] + argv[1:])
        codes = exit_codes(help_text(argv))
        self.assertIsNotNone(codes, f"no 'Exit codes:' in `{shown} --help`")
        self.assertIn(0, codes, shown)
        self.assertIn(2, codes, f"`{shown} --help` does not list 2 (usage error)")
        self.assertEqual(130 in codes, 143 in codes,
                         f"`{shown} --help`: 130 (SIGINT) and 143 (SIGTERM) go together")
        for code, text in codes.items():
            self.assertIn(code, self.table, f"{shown}: {code} is not in the table")
            self.assertTrue(text.startswith(self.table[code]),
                            f"{shown}: {code} means '{text}', the table says '{self.table[code]}'")
        # What --help promises for a usage error is what a bad flag returns.
        r = subprocess.run(argv + ["--no-such-flag"], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=10)
        self.assertEqual(r.returncode, 2, f"`{shown} --no-such-flag` exited {r.returncode}")
        self.assertIn("--help", r.stderr, f"`{shown} --no-such-flag` says where usage is")

    def test_every_command(self):
        self.assertTrue(self.commands, "no command found in `flowmark --help`")
        for c in self.commands:
            with self.subTest(command=" ".join(c)):
                self.check([FLOWMARK, *c])

    def test_flowmarkd(self):
        for c in discover([FLOWMARKD]):
            with self.subTest(command=" ".join(["flowmarkd", *c])):
                self.check([FLOWMARKD, *c])


if __name__ == "__main__":
    unittest.main(verbosity=2)
