#!/usr/bin/env python3
"""Every command of flowmark and flowmarkd lists its exit codes in --help, and each code it
lists has the meaning of the one table (`flowmark --help` prints the whole table).

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

COMMANDS = [["mcast", "say"], ["mcast", "recv"], ["mcast", "hear"], ["multicast", "SAY"],
            ["firefly", "send"], ["firefly", "listen"], ["firefly", "decode"], ["label"],
            ["registry"], ["stun"], ["observe"]]


def help_text(argv):
    r = subprocess.run(argv + ["--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=10)
    if r.returncode != 0:
        raise AssertionError(f"{argv} --help exited {r.returncode}: {r.stderr}")
    return r.stdout


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
        cls.commands = list(COMMANDS)
        if "bpf" in help_text([FLOWMARK]):
            cls.commands.append(["bpf"])

    def test_the_table_has_the_multicast_numbers(self):
        self.assertIsNotNone(self.table)
        for code in (0, 1, 2, 68, 69, 70, 77, 130, 143):
            self.assertIn(code, self.table)

    def check(self, argv):
        codes = exit_codes(help_text(argv))
        self.assertIsNotNone(codes, f"no 'Exit codes:' in {' '.join(argv)} --help")
        self.assertIn(0, codes, argv)
        for code, text in codes.items():
            self.assertIn(code, self.table, f"{argv}: {code} is not in the table")
            self.assertTrue(text.startswith(self.table[code]),
                            f"{argv}: {code} means '{text}', the table says '{self.table[code]}'")

    def test_every_command(self):
        for c in self.commands:
            with self.subTest(command=c):
                self.check([FLOWMARK, *c])

    def test_flowmarkd(self):
        self.check([FLOWMARKD])


if __name__ == "__main__":
    unittest.main(verbosity=2)
