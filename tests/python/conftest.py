"""pytest set-up shared by the tests of the Python module (tests/python/test_*.py).

Run by CTest (tests/CMakeLists.txt) with Debian's /usr/bin/python3, PYTHONPATH pointing at the
package assembled in the build tree (<build>/python/flowmark) and FLOWMARK_BUILD /
FLOWMARK_SOURCE set. A pytest "skipped" would leave CTest reporting the file as passed, so a
session with any skipped test exits 4, which CTest reports as skipped (SKIP_RETURN_CODE) and
scripts/check-skips.py then names, unless tests/skip-allowlist.txt says why.
"""
import os
import sys

import pytest

SOURCE = os.environ.get("FLOWMARK_SOURCE",
                        os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BUILD = os.environ.get("FLOWMARK_BUILD", os.path.join(SOURCE, "build", "release"))
# netns_helpers (namespaces, veth pairs, waits) and the capture builders of the observer tests.
sys.path.insert(0, os.path.join(SOURCE, "tests", "integration"))
sys.path.insert(0, os.path.join(BUILD, "python"))

TEST_DATA = os.path.join(SOURCE, "tests", "data")
PATHSPIDER_CAPTURES = "/usr/lib/python3/dist-packages/pathspider/tests/data"


@pytest.fixture(scope="session")
def build_dir():
    return BUILD


@pytest.fixture(scope="session")
def flowmark_bin():
    return os.path.join(BUILD, "flowmark")


@pytest.fixture(scope="session")
def flowmarkd_bin():
    return os.path.join(BUILD, "flowmarkd")


@pytest.fixture(scope="session")
def source_dir():
    return SOURCE


def need_root():
    """Namespaces and veth pairs need root: without it the test is skipped, saying so."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")


def pytest_sessionfinish(session, exitstatus):
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if exitstatus == 0 and skipped:
        session.exitstatus = 4
