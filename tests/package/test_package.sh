#!/usr/bin/env bash
# The Debian packages, end to end, on THIS system: builds the .debs from a build tree (cpack):
# flowmark, and python3-flowmark when the build has the Python module; checks them with
# lintian (no errors), installs them with dpkg (dependencies from apt), checks the installed
# programs, config, units and man pages, `import flowmark` with /usr/bin/python3 and in a
# virtualenv (`python3 -m flowmark.venv`), then removes and purges them and compares the file
# system with what it was before.
#
#   tests/package/test_package.sh BUILD_DIR [CPACK]
#
# It installs into the real system, so it runs only as root, and it never touches a flowmark
# or python3-flowmark package (or /etc/flowmark, /var/log/flowmark,
# /usr/lib/python3/dist-packages/flowmark) that was there before it started: it skips (exit
# 4, the reason printed) instead. Whatever fails, the packages it installed are purged on
# exit. Packages apt installs to satisfy dependencies are left installed (listed).
set -euo pipefail

readonly kSkip=4
readonly kPackage=flowmark
readonly kPyPackage=python3-flowmark
readonly kPyDir=/usr/lib/python3/dist-packages/flowmark
build=$(realpath "${1:?usage: test_package.sh BUILD_DIR [CPACK]}")
cpack=${2:-cpack}
source_dir=$(realpath "$(dirname "$0")/../..")

skip() { echo "SKIP: $*"; exit "$kSkip"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
step() { echo; echo "== $*"; }

# Debian's status of a package (default flowmark): "ii ", "rc ", ... or "" when dpkg has never
# heard of it.
status() { dpkg-query -W -f='${db:Status-Abbrev}' "${1:-$kPackage}" 2>/dev/null || true; }

# ---- may it run here? -------------------------------------------------------------------
[[ $(id -u) -eq 0 ]] || skip "installs the package into this system: run as root"
for pkg in "$kPackage" "$kPyPackage"; do
  case "$(status "$pkg")" in
    "" | "un ") ;;
    *) skip "a $pkg package is already on this system ($(status "$pkg" | tr -d ' ')): the" \
            "test would replace and then purge it; remove it first (dpkg -P $pkg)" ;;
  esac
done
for path in /etc/flowmark /var/log/flowmark "$kPyDir"; do
  [[ ! -e $path ]] || skip "$path exists without the package; the test's purge would delete it"
done
for tool in dpkg dpkg-deb dpkg-shlibdeps dpkg-query file apt-get lintian systemd-analyze man \
            "$cpack"; do
  command -v "$tool" >/dev/null ||
    fail "'$tool' not found: run scripts/install-deps.sh (it installs the packaging tools)"
done
[[ -f $build/CPackConfig.cmake ]] ||
  fail "$build/CPackConfig.cmake missing: configure and build with the release preset first"
# The build has the Python module (python/CMakeLists.txt): CPack makes python3-flowmark too.
with_python=0
if grep -q '"Unspecified;python3-flowmark"' "$build/CPackConfig.cmake"; then with_python=1; fi

work=$(mktemp -d /tmp/flowmark-package-test.XXXXXX)
installed_by_us=0
cleanup() {
  local rc=$?
  local pkg
  for pkg in "$kPyPackage" "$kPackage"; do
    if ((installed_by_us)) && [[ -n $(status "$pkg") && $(status "$pkg") != "un " ]]; then
      echo "cleanup: purging the $pkg package this test installed"
      if ! dpkg -P "$pkg"; then
        echo "cleanup: dpkg -P $pkg FAILED: the package is still installed" >&2
        rc=1
      fi
    fi
  done
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- build ------------------------------------------------------------------------------
step "cpack: the .debs of $build"
"$cpack" --config "$build/CPackConfig.cmake" -G DEB -B "$work/out" >"$work/cpack.log" 2>&1 ||
  { cat "$work/cpack.log"; fail "cpack could not build the package"; }
debs=("$work"/out/*.deb)
arch=$(dpkg --print-architecture)
version=$(dpkg-deb -f "${debs[0]}" Version 2>/dev/null) || fail "cpack made no .deb: ${debs[*]}"
deb=$work/out/${kPackage}_${version}_$arch.deb
pydeb=$work/out/${kPyPackage}_${version}_$arch.deb
want=("$deb")
if ((with_python)); then want+=("$pydeb"); fi
[[ "${debs[*]}" == "$(printf '%s\n' "${want[@]}" | sort | tr '\n' ' ' | sed 's/ $//')" ]] ||
  fail "expected ${want[*]##*/}, cpack made: ${debs[*]##*/}"
for d in "${want[@]}"; do echo "$(basename "$d"): $(stat -c %s "$d") bytes"; done
((with_python)) || echo "(no Python module in this build: no $kPyPackage package)"

step "contents"
dpkg-deb -c "$deb" >"$work/listing"
awk '{ print $6 }' "$work/listing" | sed 's|^\./|/|; s|/$||' | sort >"$work/contents"
expected=(/usr/bin/flowmark /usr/bin/multicast /usr/sbin/flowmarkd
          /lib/systemd/system/flowmarkd.service /lib/systemd/system/flowmarkd@.service
          /etc/flowmark/flowmark.toml
          /usr/share/doc/flowmark/copyright /usr/share/doc/flowmark/changelog.Debian.gz
          /usr/share/flowmark/dashboard/index.html /usr/share/flowmark/dashboard/app.js
          /usr/share/flowmark/dashboard/style.css /usr/share/flowmark/dashboard/uPlot.iife.min.js
          /usr/share/flowmark/dashboard/uPlot.min.css
          /usr/share/flowmark/grafana/flowmark-collector.json
          /usr/share/flowmark/ipfix/cesnet-scitags.xml
          /usr/share/flowmark/ipfix/cesnet-scitags.iespec)
pages=()
for page in "$source_dir"/packaging/man/*.[1-9]; do
  name=$(basename "$page")
  pages+=("$name")
  expected+=("/usr/share/man/man${name##*.}/$name.gz")
done
((${#pages[@]} > 0)) || fail "no man pages found in $source_dir/packaging/man"
for path in "${expected[@]}"; do
  grep -qxF "$path" "$work/contents" || fail "the package lacks $path"
done
grep -q ' \./usr/bin/multicast -> flowmark$' "$work/listing" ||
  fail "/usr/bin/multicast is not a relative link to flowmark"
# Every file under /etc is a conffile, and nothing else is.
dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles | sort >"$work/conffiles"
awk '$1 !~ /^d/ { print $6 }' "$work/listing" | sed 's|^\./|/|' | grep '^/etc/' | sort \
  >"$work/etc_files" || true
diff -u "$work/etc_files" "$work/conffiles" || fail "conffiles differs from the files in /etc"
depends=$(dpkg-deb -f "$deb" Depends)
echo "Depends: $depends"
echo "Recommends: $(dpkg-deb -f "$deb" Recommends)"
[[ $depends == *libc6* && $depends == *libstdc++6* ]] ||
  fail "Depends lacks the C/C++ run-time libraries: did dpkg-shlibdeps run?"
# libpcap is dlopen()ed (src/capture/libpcap.cpp): dpkg-shlibdeps cannot see it.
[[ $depends == *libpcap0.8* ]] ||
  fail "Depends lacks libpcap0.8, which the observer loads at run time (cmake/Packaging.cmake)"
# The Python module is python3-flowmark's, never flowmark's.
if grep '^/usr/lib/python3' "$work/contents"; then fail "flowmark contains the Python module"; fi
echo "${#expected[@]} expected paths present; man pages: ${pages[*]}"

if ((with_python)); then
  step "contents of $kPyPackage"
  dpkg-deb -c "$pydeb" | awk '{ print $6 }' | sed 's|^\./|/|; s|/$||' | sort >"$work/pycontents"
  py_minor=$(/usr/bin/python3 -c 'import sys; print(sys.version_info.minor)')
  py_major=$(/usr/bin/python3 -c 'import sys; print(sys.version_info.major)')
  ext=$(/usr/bin/python3 -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
  for path in "$kPyDir/__init__.py" "$kPyDir/py.typed" "$kPyDir/venv.py" "$kPyDir/_flowmark$ext" \
              "/usr/share/doc/$kPyPackage/copyright" "/usr/share/doc/$kPyPackage/changelog.Debian.gz"; do
    grep -qxF "$path" "$work/pycontents" || fail "$kPyPackage lacks $path"
  done
  if grep -v -e "^$kPyDir" -e "^/usr/share/doc/$kPyPackage" -e "^/usr/share/lintian" \
       -e '^/usr/share/doc$' -e '^/usr/share$' -e '^/usr/lib/python3/dist-packages$' \
       -e '^/usr/lib/python3$' -e '^/usr/lib$' -e '^/usr$' -e '^/$' -e '^$' "$work/pycontents"; then
    fail "$kPyPackage holds files outside the module and its documents (above)"
  fi
  pydepends=$(dpkg-deb -f "$pydeb" Depends)
  echo "Depends: $pydepends"
  echo "Section: $(dpkg-deb -f "$pydeb" Section)"
  # The extension module is built for one Python minor version (its ABI tag): that one only.
  [[ $pydepends == *"python3 (>= $py_major.$py_minor~)"* &&
     $pydepends == *"python3 (<< $py_major.$((py_minor + 1)))"* ]] ||
    fail "Depends does not pin python3 to $py_major.$py_minor, the module's ABI"
  [[ $pydepends == *libstdc++6* ]] || fail "Depends lacks libstdc++6: did dpkg-shlibdeps run?"
  [[ $(dpkg-deb -f "$pydeb" Section) == python ]] || fail "$kPyPackage is not in Section python"
  dpkg-deb --ctrl-tarfile "$pydeb" | tar -t | grep -qx './postinst' ||
    fail "$kPyPackage has no postinst (py3compile)"
  echo "$(wc -l <"$work/pycontents") paths"
fi

step "lintian (errors fail; warnings and notes are listed)"
for d in "${want[@]}"; do
  lintian_rc=0
  lintian --fail-on error --display-info --pedantic --show-overrides "$d" \
    >"$work/lintian.log" 2>&1 || lintian_rc=$?
  grep -v '^running with root privileges is not recommended!$' "$work/lintian.log" || true
  ((lintian_rc == 0)) || fail "lintian reports errors for ${d##*/} (exit $lintian_rc), see above"
  echo "lintian ${d##*/}: no errors; $(grep -c '^W: ' "$work/lintian.log" || true) warning(s)"
done

# ---- the system before ------------------------------------------------------------------
# Every path under the roots a package can write to, except dpkg's and apt's own records,
# caches and logs (they change with any installation), and systemd's timer stamps (a timer
# may fire meanwhile on a host that runs systemd).
snapshot() {
  find /etc /usr /opt /srv /var -xdev \
    \( -path /var/lib/dpkg -o -path /var/lib/apt -o -path /var/cache -o -path /var/log \
       -o -path /var/tmp -o -path /var/backups -o -path /var/lib/systemd/timers \) -prune \
    -o -print 2>/dev/null | sort
  # The service's logs are under /var/log: only its own directory is compared.
  if [[ -e /var/log/flowmark ]]; then find /var/log/flowmark | sort; fi
}
packages() { dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' | awk '$1 == "ii" { print $2 }'; }
step "snapshot of the file system before installing"
snapshot >"$work/before"
packages >"$work/packages_before"
echo "$(wc -l <"$work/before") paths"

# ---- install ----------------------------------------------------------------------------
step "dpkg -i"
installed_by_us=1
if ! dpkg -i "${want[@]}"; then
  echo "dpkg -i failed (missing dependencies?): apt-get -f install"
  DEBIAN_FRONTEND=noninteractive apt-get -f install -y -q || fail "apt-get -f install failed"
fi
[[ $(status) == "ii " ]] || fail "$kPackage is not installed after dpkg -i: status '$(status)'"
if ((with_python)); then
  [[ $(status "$kPyPackage") == "ii " ]] ||
    fail "$kPyPackage is not installed after dpkg -i: status '$(status "$kPyPackage")'"
fi
packages >"$work/packages_after"
comm -13 "$work/packages_before" "$work/packages_after" |
  grep -vxF -e "$kPackage" -e "$kPyPackage" >"$work/added_by_apt" || true
if [[ -s $work/added_by_apt ]]; then
  echo "apt installed (left installed): $(tr '\n' ' ' <"$work/added_by_apt")"
fi

step "installed files"
dpkg-query -W -f='${Conffiles}\n' "$kPackage" | grep -q '^ /etc/flowmark/flowmark.toml ' ||
  fail "dpkg did not register /etc/flowmark/flowmark.toml as a conffile"
for program in /usr/bin/flowmark /usr/sbin/flowmarkd; do
  if ldd "$program" | grep 'not found'; then fail "$program: shared libraries missing"; fi
done
/usr/bin/flowmark --version
/usr/sbin/flowmarkd --version
/usr/bin/multicast --help | head -n 1
/usr/bin/multicast --help | head -n 1 | grep -q '^multicast' ||
  fail "/usr/bin/multicast does not run as multicast"

step "flowmarkd --check on the installed configuration"
/usr/sbin/flowmarkd --check -c /etc/flowmark/flowmark.toml ||
  fail "flowmarkd --check rejects the installed /etc/flowmark/flowmark.toml"

step "systemd-analyze verify"
# The template with an instance name (systemd-analyze's FILE:NAME alias form). Anything
# printed, even a warning that leaves the exit status 0, fails.
for unit in /lib/systemd/system/flowmarkd.service \
            /lib/systemd/system/flowmarkd@.service:flowmarkd@verify.service; do
  if ! out=$(systemd-analyze verify "$unit" 2>&1) || [[ -n $out ]]; then
    echo "$out"
    fail "systemd-analyze verify $unit is not clean"
  fi
  echo "$unit: clean"
done

step "man pages"
man -w flowmarkd || fail "man -w flowmarkd finds no page"
for name in "${pages[@]}"; do
  section=${name##*.}
  want="/usr/share/man/man$section/$name.gz"
  # A link page (".so man1/flowmark-mcast.1") is found as the page it names.
  first=$(head -n 1 "$source_dir/packaging/man/$name")
  if [[ $first =~ ^\.so[[:space:]]+([^[:space:]]+)$ ]]; then
    want="/usr/share/man/${BASH_REMATCH[1]}.gz"
  fi
  found=$(man -w "$section" "${name%.*}") || fail "man -w $section ${name%.*} finds no page"
  [[ $found == "$want" ]] || fail "man -w $section ${name%.*} finds $found, not $want"
done
# Every program has its page, the multicast link too.
for name in flowmark flowmarkd multicast; do
  man -w "$name" >/dev/null || fail "man -w $name finds no page"
done
# multicast(1) is a .so link page: it must lead to the installed flowmark-mcast(1).
text=$(man 1 multicast 2>&1) || fail "man 1 multicast fails: $text"
[[ $text == *flowmark-mcast* || $text == *FLOWMARK-MCAST* ]] ||
  fail "man 1 multicast does not show flowmark-mcast(1): $(head -n 5 <<<"$text")"
echo "all ${#pages[@]} pages found"

# ---- the Python module ------------------------------------------------------------------
if ((with_python)); then
  step "import flowmark with /usr/bin/python3, from any directory"
  if ldd "$kPyDir/_flowmark$ext" | grep 'not found'; then fail "the module's libraries are missing"; fi
  for dir in / "$work" /usr/share; do
    got=$(cd "$dir" && env -i PATH=/usr/bin:/bin /usr/bin/python3 -c \
      'import flowmark, flowmark.scitags as s; print(flowmark.__file__, tuple(s.decode_label(65572)))') ||
      fail "import flowmark fails in $dir"
    [[ $got == "$kPyDir/__init__.py (2, 9, 0)" ]] || fail "in $dir: $got"
  done
  echo "$got"
  # postinst byte-compiled the .py files (prerm removes them; purge is checked below).
  compgen -G "$kPyDir/__pycache__/__init__.cpython-*.pyc" >/dev/null ||
    fail "postinst did not byte-compile the module (no $kPyDir/__pycache__)"

  step "a virtualenv: /usr/bin/python3 -m venv VENV; /usr/bin/python3 -m flowmark.venv VENV"
  /usr/bin/python3 -m venv "$work/venv" || fail "/usr/bin/python3 -m venv fails (python3-venv?)"
  probe='import sys, flowmark; print(flowmark.__file__); print([p for p in sys.path if "dist-packages" in p])'
  if (cd / && env -i "$work/venv/bin/python" -c "$probe") 2>/dev/null; then
    fail "the virtualenv imports flowmark before flowmark.venv linked it"
  fi
  (cd / && env -i PATH=/usr/bin:/bin /usr/bin/python3 -m flowmark.venv "$work/venv") ||
    fail "python3 -m flowmark.venv $work/venv failed"
  got=$(cd / && env -i "$work/venv/bin/python" -c "$probe") ||
    fail "import flowmark fails in the virtualenv after flowmark.venv"
  site=$("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
  [[ $got == "$site/flowmark/__init__.py"$'\n''[]' ]] ||
    fail "the virtualenv's flowmark or sys.path is not as expected: $got"
  [[ $(readlink "$site/flowmark") == "$kPyDir" ]] || fail "$site/flowmark does not link $kPyDir"
  echo "$got"
fi

# ---- remove, purge ----------------------------------------------------------------------
# What an administrator does: enable the service (systemctl makes the links without a running
# systemd). Purge removes them, through deb-systemd-helper's record of the unit.
step "systemctl enable flowmarkd.service"
systemctl enable flowmarkd.service
[[ -L /etc/systemd/system/multi-user.target.wants/flowmarkd.service ]] ||
  fail "systemctl enable made no multi-user.target.wants link"
# The service's log directory, as the units' LogsDirectory= makes it: purge removes it.
mkdir -p /var/log/flowmark && echo '{}' >/var/log/flowmark/events.jsonl

step "dpkg -r: the conffile stays"
if ((with_python)); then
  dpkg -r "$kPyPackage"
  [[ $(status "$kPyPackage") != "ii " ]] || fail "dpkg -r left $kPyPackage installed"
  [[ ! -e $kPyDir ]] || { find "$kPyDir"; fail "dpkg -r $kPyPackage left $kPyDir"; }
fi
dpkg -r "$kPackage"
[[ $(status) == "rc " ]] || fail "after dpkg -r the status is '$(status)', not rc"
[[ -f /etc/flowmark/flowmark.toml ]] || fail "dpkg -r removed the conffile"
for path in /usr/bin/flowmark /usr/bin/multicast /usr/sbin/flowmarkd \
            /lib/systemd/system/flowmarkd.service; do
  [[ ! -e $path && ! -L $path ]] || fail "dpkg -r left $path"
done

step "dpkg -P: nothing is left"
dpkg -P "$kPackage"
if [[ -n $(status "$kPyPackage") && $(status "$kPyPackage") != "un " ]]; then
  dpkg -P "$kPyPackage"
fi
installed_by_us=0
[[ -z $(status) || $(status) == "un " ]] || fail "after dpkg -P the status is '$(status)'"
[[ -z $(status "$kPyPackage") || $(status "$kPyPackage") == "un " ]] ||
  fail "after dpkg -P $kPyPackage's status is '$(status "$kPyPackage")'"
snapshot >"$work/after"
# Paths that appeared: only those of the packages apt installed may remain.
comm -13 "$work/before" "$work/after" >"$work/appeared"
: >"$work/left"
while IFS= read -r path; do
  owner=$(dpkg-query -S "$path" 2>/dev/null | cut -d: -f1 | tr ',' '\n' | tr -d ' ') || true
  if [[ -n $owner ]] && grep -qxF -f <(echo "$owner") "$work/added_by_apt"; then continue; fi
  echo "$path" >>"$work/left"
done <"$work/appeared"
comm -23 "$work/before" "$work/after" >"$work/vanished"
if [[ -s $work/left || -s $work/vanished ]]; then
  [[ ! -s $work/left ]] || { echo "left behind:"; cat "$work/left"; }
  if [[ -s $work/vanished ]]; then
    echo "removed although they were there before:"
    cat "$work/vanished"
  fi
  fail "the file system differs after dpkg -P"
fi
echo "$(wc -l <"$work/after") paths, the same as before"

echo
echo "PASS: the package(s) build, pass lintian, install, work and purge cleanly"
