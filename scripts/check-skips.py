#!/usr/bin/env python3
"""Fails when a CTest run skipped a test that the allow-list does not name.

    scripts/check-skips.py JUNIT_XML [ALLOWLIST]

JUNIT_XML is written by `ctest --output-junit FILE`; ALLOWLIST defaults to
tests/skip-allowlist.txt (one CTest name or shell-style pattern a line, then the reason;
# starts a comment). Every skipped test is printed with the reason its output gives
(GoogleTest's GTEST_SKIP message, or the `SKIPPED test: reason` lines that
tests/integration/ksft.py prints). Skips are only checked when running as root: an
unprivileged run may skip the tests that need namespaces or BPF (they still say why).
Exit 0: no skip, or every skip allowed (or not root); 1: a skip not allowed; 2: bad input."""

import fnmatch
import os
import sys
import xml.etree.ElementTree as ET


def load_allowlist(path):
    allowed = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            pattern, _, reason = line.partition(" ")
            if not reason.strip():
                sys.exit(f"{path}:{n}: '{pattern}' has no reason: give one after the name")
            allowed.append((pattern, reason.strip()))
    return allowed


def skip_reasons(output):
    """The lines of a test's output that say why it skipped."""
    lines = output.splitlines()
    reasons = []
    for i, line in enumerate(lines):
        if line.startswith("SKIPPED "):  # ksft.py
            reasons.append(line[len("SKIPPED "):])
        elif line.rstrip().endswith(": Skipped"):  # GTEST_SKIP: the message follows
            message = []
            for follow in lines[i + 1:]:
                if follow.startswith("[  SKIPPED ]") or follow.startswith("[  "):
                    break
                message.append(follow)
            reasons.append(" ".join(m.strip() for m in message if m.strip()) or "(no message)")
    if not reasons:
        reasons = ["(no reason printed; last lines:) " + " | ".join(lines[-3:])]
    return reasons


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    junit = sys.argv[1]
    top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    allowlist = sys.argv[2] if len(sys.argv) == 3 else os.path.join(top, "tests",
                                                                     "skip-allowlist.txt")
    try:
        root = ET.parse(junit).getroot()
    except (OSError, ET.ParseError) as e:
        print(f"check-skips: cannot read {junit}: {e}", file=sys.stderr)
        return 2
    allowed = load_allowlist(allowlist)
    skipped = []
    for case in root.iter("testcase"):
        marker = case.find("skipped")
        if marker is None:
            continue
        out = case.findtext("system-out") or ""
        skipped.append((case.get("name"), marker.get("message", ""), skip_reasons(out)))
    if not skipped:
        print(f"check-skips: no test skipped ({junit})")
        return 0
    bad = []
    for name, how, reasons in skipped:
        why_allowed = next((r for p, r in allowed if fnmatch.fnmatchcase(name, p)), None)
        tag = f"allowed: {why_allowed}" if why_allowed else "NOT ALLOWED"
        print(f"check-skips: {name} skipped ({how}; {tag})")
        for r in reasons:
            print(f"    {r}")
        if why_allowed is None:
            bad.append(name)
    if os.geteuid() != 0:
        print(f"check-skips: not root: {len(skipped)} skip(s) accepted")
        return 0
    if bad:
        print(f"check-skips: {len(bad)} test(s) skipped as root that {allowlist} does not "
              f"allow: {', '.join(bad)} — as root every test can run here: install what is "
              "missing (scripts/install-deps.sh) or fix the test; add a test to the "
              "allow-list only with the reason it cannot run on this machine", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
