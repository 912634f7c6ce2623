"""Runs a unittest module the way CTest can tell apart passed, failed and skipped.

    from ksft import main
    if __name__ == "__main__":
        main()

Exit status as the kernel selftests use it: 0 every test ran and passed, 1 a test failed
or errored, 4 (KSFT_SKIP) no test failed but at least one was skipped. Each skipped test is
printed with its reason on stderr, so that the CTest log says why. CMake gives these tests
SKIP_RETURN_CODE 4 (tests/CMakeLists.txt), and scripts/check-skips.py fails `make test`
when a test skipped that is not in tests/skip-allowlist.txt."""

import sys
import unittest

KSFT_SKIP = 4


def main(**kwargs):
    """unittest.main(verbosity=2) with the exit status above; never returns."""
    kwargs.setdefault("verbosity", 2)
    program = unittest.main(exit=False, **kwargs)
    result = program.result
    for test, reason in result.skipped:
        print(f"SKIPPED {test}: {reason}", file=sys.stderr)
    if not result.wasSuccessful():
        sys.exit(1)
    if result.skipped:
        print(f"{len(result.skipped)} test(s) skipped: exit {KSFT_SKIP} (skipped)",
              file=sys.stderr)
        sys.exit(KSFT_SKIP)
    if result.testsRun == 0:
        print("no test ran", file=sys.stderr)
        sys.exit(1)
    sys.exit(0)
