# What `cmake --install` puts where, and the Debian package CPack builds from it
# (`make package` → build/release/flowmark_<version>-<release>_<arch>.deb). Included from the
# programs section of CMakeLists.txt, after the flowmark and flowmarkd targets.
#
#   /usr/bin/flowmark, /usr/bin/multicast -> flowmark      the tool (and the seed's name)
#   /usr/sbin/flowmarkd                                    the service
#   /lib/systemd/system/flowmarkd.service, flowmarkd@.service
#   /etc/flowmark/flowmark.toml                            a conffile (packaging/debian/conffiles)
#   /usr/share/flowmark/dashboard/                         the dashboard backend's page
#   /usr/share/flowmark/grafana/flowmark-collector.json    a Grafana dashboard of the metrics
#   /usr/share/flowmark/ipfix/cesnet-scitags.{xml,iespec}  the IPFIX export's enterprise
#                                                          elements, for ipfixDump / python3-ipfix
#   /usr/share/man/manN/*.N.gz                             every page in packaging/man/
#   /usr/share/doc/flowmark/copyright, changelog.Debian.gz
#   /usr/share/lintian/overrides/flowmark                  each override with its reason
#
# The units name /usr/sbin/flowmarkd and /etc/flowmark, so /usr is the default prefix.
if(CMAKE_INSTALL_PREFIX_INITIALIZED_TO_DEFAULT)
  set(CMAKE_INSTALL_PREFIX /usr CACHE PATH "Install prefix (the systemd units expect /usr)"
      FORCE)
endif()
# The same modes whatever the umask of whoever builds the package.
set(CMAKE_INSTALL_DEFAULT_DIRECTORY_PERMISSIONS
    OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE WORLD_READ WORLD_EXECUTE)

set(_pkg_dir ${PROJECT_SOURCE_DIR}/packaging)
set(_pkg_out ${PROJECT_BINARY_DIR}/packaging)

# ---- programs -------------------------------------------------------------------------
install(TARGETS flowmark RUNTIME DESTINATION bin)
install(TARGETS flowmarkd RUNTIME DESTINATION sbin)
# `multicast SAY|RECV|HEAR ...` runs the same binary (a relative link, as Debian wants).
install(CODE "file(CREATE_LINK flowmark \"\$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/bin/multicast\" \
  SYMBOLIC)")
install(FILES ${_pkg_dir}/systemd/flowmarkd.service ${_pkg_dir}/systemd/flowmarkd@.service
        DESTINATION /lib/systemd/system)
install(FILES ${_pkg_dir}/flowmark.toml DESTINATION /etc/flowmark)
# The dashboard backend's page and its charting library (cmake/Dashboard.cmake).
install(DIRECTORY ${FLOWMARK_DASHBOARD_DIR}/ DESTINATION share/flowmark/dashboard)
# The Grafana dashboard of the Prometheus backend's collector series.
install(FILES ${_pkg_dir}/grafana/flowmark-collector.json DESTINATION share/flowmark/grafana)
# Definitions of the enterprise elements `observe --ipfix` writes (CESNET's Scitags elements),
# for libfixbuf's ipfixDump -e and python3-ipfix's ie.use_specfile.
install(FILES ${_pkg_dir}/ipfix/cesnet-scitags.xml ${_pkg_dir}/ipfix/cesnet-scitags.iespec
        DESTINATION share/flowmark/ipfix)

# ---- manual pages: every NAME.N in packaging/man/, gzipped -9n (no name or time stamp: the
# same bytes on every build) into share/man/manN ------------------------------------------
file(GLOB _man_pages CONFIGURE_DEPENDS ${_pkg_dir}/man/*.[1-9])
# What is installed, for the man-page test (tests/docs/check_man.py --installed).
set(FLOWMARK_MAN_PAGES ${_man_pages})
set(_man_outputs "")
foreach(_page IN LISTS _man_pages)
  get_filename_component(_name ${_page} NAME)
  string(REGEX MATCH "[1-9]$" _section ${_name})
  set(_out ${_pkg_out}/man/man${_section}/${_name}.gz)
  add_custom_command(OUTPUT ${_out}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${_pkg_out}/man/man${_section}
    COMMAND sh -c "rm -f \"$1\" && gzip -9n < \"$0\" > \"$1\"" ${_page} ${_out}
    DEPENDS ${_page} COMMENT "Compressing man page ${_name}" VERBATIM)
  list(APPEND _man_outputs ${_out})
  install(FILES ${_out} DESTINATION share/man/man${_section})
endforeach()

# ---- Debian documents -------------------------------------------------------------------
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
# The changelog's newest entry must be the version being packaged.
file(STRINGS ${_pkg_dir}/debian/changelog _top LIMIT_COUNT 1)
set(_want "flowmark (${PROJECT_VERSION}-${CPACK_DEBIAN_PACKAGE_RELEASE})")
string(FIND "${_top}" "${_want}" _at)
if(NOT _at EQUAL 0)
  message(FATAL_ERROR "packaging/debian/changelog starts with '${_top}', but the package is "
          "${_want}: add a changelog entry for it (or change CPACK_DEBIAN_PACKAGE_RELEASE in "
          "cmake/Packaging.cmake)")
endif()
set(_changelog ${_pkg_out}/changelog.Debian.gz)
add_custom_command(OUTPUT ${_changelog}
  COMMAND sh -c "gzip -9n < \"$0\" > \"$1\"" ${_pkg_dir}/debian/changelog ${_changelog}
  DEPENDS ${_pkg_dir}/debian/changelog VERBATIM)
add_custom_target(packaging_docs ALL DEPENDS ${_man_outputs} ${_changelog})
install(FILES ${_pkg_dir}/debian/copyright ${_changelog} DESTINATION share/doc/flowmark)
# Lintian tags that do not apply, each with its reason.
install(FILES ${_pkg_dir}/debian/lintian-overrides DESTINATION share/lintian/overrides
        RENAME flowmark)

# ---- the .deb ---------------------------------------------------------------------------
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME flowmark)
set(CPACK_PACKAGE_VENDOR "flowmark maintainers")
set(CPACK_PACKAGE_CONTACT
    "flowmark maintainers <maintainers@users.noreply.h-seed-49befc63.example>")
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${CPACK_PACKAGE_CONTACT}")
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)  # flowmark_0.1.0-1_amd64.deb
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "Scitags flow marking service and tools (fireflies, IPv6 flow labels)")
set(CPACK_PACKAGE_DESCRIPTION "\
flowmarkd marks network flows for the Scitags initiative: flow events from a
named pipe, received fireflies, the host's TCP sockets (netlink or eBPF kernel
events) or a passive packet observer go to backends that send UDP fireflies,
write the experiment and activity into the IPv6 flow label of the flow's
packets (eBPF on TC egress), export Prometheus metrics or write JSON records.
It reads flowd's configuration files as they are.

flowmark is the command-line tool: multicast messaging (also run as
`multicast`), firefly send/listen/decode, flow-label encoding, the Scitags
registry, a capture-to-flow-records observer, STUN and eBPF housekeeping.")
# Strip the installed programs (the release build has debug information).
set(CPACK_STRIP_FILES ON)
# Library dependencies from the programs' NEEDED entries (dpkg-shlibdeps, from dpkg-dev).
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# libcurl is dlopen()ed, not linked, so shlibdeps cannot see it; it is needed only when
# [service] registry (or `flowmark registry`) names an http(s):// URL, while the default, the
# built-in registry, a file or no registry at all work without it: a Recommends (installed by
# default, removable by those who never fetch), not a Depends.
# librdkafka is dlopen()ed by the kafka backend alone (src/daemon/backends/kafka/
# rdkafka_api.cpp): a Suggests, for the sites that hand their flows to Kafka.
if(FLOWMARK_KAFKA)
  set(CPACK_DEBIAN_PACKAGE_SUGGESTS "librdkafka1")
endif()
# libpq is dlopen()ed as well (src/collector/store_postgres.cpp), needed only for a
# postgresql:// store; SQLite stores, the default, work without it: a Recommends too.
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "libcurl4, libpq5")
# libpcap is dlopen()ed too (src/capture/libpcap.cpp), so shlibdeps cannot see it either; but
# the packet observer (`flowmark observe`, the service's observer source) is a core command
# that needs it for filters, standard input and --capture pcap: a Depends. 1.5.1 is the
# version Debian's symbols file gives for the newest function flowmark calls
# (pcap_set_immediate_mode, pcap_*_with_tstamp_precision). CPack appends the shlibdeps.
# libsqlite3 is dlopen()ed by the store (src/collector/store_sqlite.cpp) so that a flowmarkd
# without a store backend does not map it; the store backend and `flowmark report` need it for
# store files, the default: a Depends. 3.37.0 brought sqlite3_changes64, the newest it calls.
set(CPACK_DEBIAN_PACKAGE_DEPENDS "libpcap0.8 (>= 1.5.1), libsqlite3-0 (>= 3.37.0)")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${_pkg_dir}/debian/conffiles ${_pkg_dir}/debian/postinst ${_pkg_dir}/debian/prerm
    ${_pkg_dir}/debian/postrm)
# Control files get the modes Debian policy asks for (0755 scripts, 0644 the rest).
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)

# ---- python3-flowmark: the Python module, a .deb of its own -------------------------------
# python/CMakeLists.txt (added after this file) installs `import flowmark` as the install
# component python3-flowmark into /usr/lib/python3/dist-packages/flowmark; everything above
# has no component ("Unspecified") and makes the flowmark package, as before. Whether the
# module is built is known only once python/ is configured, so CPack is included at the end of
# the top directory (cmake_language DEFER). Without the module: one package, no components.
set(FLOWMARK_PACKAGING_DIR ${_pkg_dir})
set(FLOWMARK_PACKAGING_CHANGELOG ${_changelog})
macro(flowmark_include_cpack)
  if(FLOWMARK_PYTHON_BUILT)
    set(_py_pkg ${FLOWMARK_PACKAGING_DIR}/debian/python3-flowmark)
    install(FILES ${FLOWMARK_PACKAGING_DIR}/debian/copyright ${FLOWMARK_PACKAGING_CHANGELOG}
            DESTINATION share/doc/python3-flowmark COMPONENT python3-flowmark)
    install(FILES ${_py_pkg}/lintian-overrides DESTINATION share/lintian/overrides
            RENAME python3-flowmark COMPONENT python3-flowmark)
    set(CPACK_DEB_COMPONENT_INSTALL ON)
    set(CPACK_COMPONENTS_ALL Unspecified python3-flowmark)
    set(CPACK_COMPONENTS_GROUPING IGNORE)
    # The flowmark package keeps its name, file name and fields (the global ones above).
    set(CPACK_DEBIAN_UNSPECIFIED_PACKAGE_NAME flowmark)
    set(CPACK_DEBIAN_UNSPECIFIED_FILE_NAME DEB-DEFAULT)
    # CPackDeb puts CPACK_PACKAGE_DESCRIPTION_SUMMARY before every component's description
    # unless it is CPack's default: each description starts with its own synopsis instead.
    set(CPACK_DEBIAN_UNSPECIFIED_DESCRIPTION
        "${CPACK_PACKAGE_DESCRIPTION_SUMMARY}\n${CPACK_PACKAGE_DESCRIPTION}")
    unset(CPACK_PACKAGE_DESCRIPTION_SUMMARY)
    # python3-flowmark_<version>-<release>_<arch>.deb
    set(CPACK_DEBIAN_PYTHON3-FLOWMARK_PACKAGE_NAME python3-flowmark)
    set(CPACK_DEBIAN_PYTHON3-FLOWMARK_FILE_NAME DEB-DEFAULT)
    set(CPACK_DEBIAN_PYTHON3-FLOWMARK_PACKAGE_SECTION python)
    set(CPACK_DEBIAN_PYTHON3-FLOWMARK_DESCRIPTION "\
flowmark from Python: observe, multicast and Scitags (import flowmark)
The Python module of flowmark, for Debian's python3: the packet observer's
flow records as dicts, pandas or numpy arrays (flowmark.observe), pathspider's
Observer running pathspider's chain classes (flowmark.pathspider), UDP
multicast and the multicast package's API (flowmark.mcast, flowmark.multicast),
and the Scitags codecs: fireflies, IPv6 flow labels, the registry, and
announcing flows to flowmarkd or sending fireflies (flowmark.scitags).
.
The C++ code of the flowmark tools runs underneath. See flowmark-python(7) in
the flowmark package; a virtualenv gets the module with
`/usr/bin/python3 -m flowmark.venv VENV`.")
    # The extension module carries the interpreter's ABI (cpython-311-...): that Python 3
    # minor version only, as dh_python3 writes it. Library dependencies from shlibdeps; libpcap
    # and libcurl are dlopen()ed as in the flowmark package (live capture needs libpcap; a
    # registry URL libcurl).
    find_package(Python3 COMPONENTS Interpreter QUIET)
    math(EXPR _py_next "${Python3_VERSION_MINOR} + 1")
    set(CPACK_DEBIAN_PYTHON3-FLOWMARK_PACKAGE_DEPENDS
        "python3 (>= ${Python3_VERSION_MAJOR}.${Python3_VERSION_MINOR}~), \
python3 (<< ${Python3_VERSION_MAJOR}.${_py_next}), libpcap0.8 (>= 1.5.1)")
    set(CPACK_DEBIAN_PYTHON3-FLOWMARK_PACKAGE_RECOMMENDS "libcurl4")
    set(CPACK_DEBIAN_PYTHON3-FLOWMARK_PACKAGE_SUGGESTS "flowmark, python3-pandas, python3-numpy")
    set(CPACK_DEBIAN_PYTHON3-FLOWMARK_PACKAGE_SHLIBDEPS ON)
    # postinst byte-compiles the .py files, prerm removes the byte code (py3compile/py3clean).
    set(CPACK_DEBIAN_PYTHON3-FLOWMARK_PACKAGE_CONTROL_EXTRA ${_py_pkg}/postinst
        ${_py_pkg}/prerm)
    set(CPACK_DEBIAN_PYTHON3-FLOWMARK_PACKAGE_CONTROL_STRICT_PERMISSION ON)
  endif()
  include(CPack)
endmacro()
cmake_language(DEFER CALL flowmark_include_cpack)
