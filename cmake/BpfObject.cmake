# flowmark_bpf_skeleton(<target> SOURCE <file.bpf.c> NAME <skeleton name> [VMLINUX])
#
# Compiles a BPF program with clang (-target bpf -O2 -g: the BTF is needed for the maps),
# links it with `bpftool gen object` (which also drops the DWARF sections), and generates
# `<NAME>.skel.h` with `bpftool gen skeleton`: the object is embedded in that header, so
# the program that includes it needs neither a compiler nor kernel headers at run time.
# <target> is an INTERFACE library whose include directory holds the header.
#
# The flow-label program uses the Linux UAPI headers of the build machine (linux-libc-dev)
# and libbpf's bpf_helpers.h (libbpf-dev), not a vmlinux.h: it needs no CO-RE relocations.
# A program that reads kernel structures (the TCP state-change tracer) passes VMLINUX: it
# then includes a vmlinux.h generated at build time from the build machine's BTF
# (/sys/kernel/btf/vmlinux, or FLOWMARK_VMLINUX_BTF), and its field reads are CO-RE
# relocated by libbpf at load time against the running kernel's BTF.
find_program(BPF_CLANG NAMES clang-19 clang REQUIRED
             DOC "clang able to target BPF (Debian: clang-19)")
find_program(BPFTOOL NAMES bpftool PATHS /usr/sbin /sbin REQUIRED
             DOC "bpftool, for gen object and gen skeleton (Debian: bpftool)")

set(FLOWMARK_VMLINUX_BTF "/sys/kernel/btf/vmlinux" CACHE FILEPATH
    "Kernel BTF from which vmlinux.h is generated for the CO-RE BPF programs")

# vmlinux.h, generated once per build tree (bpftool btf dump ... format c).
function(flowmark_bpf_vmlinux_h out_var)
  set(dir "${CMAKE_BINARY_DIR}/bpf_vmlinux")
  set(header "${dir}/vmlinux.h")
  if(NOT TARGET flowmark_vmlinux_h)
    if(NOT EXISTS "${FLOWMARK_VMLINUX_BTF}")
      message(FATAL_ERROR "${FLOWMARK_VMLINUX_BTF} is missing: the build needs a kernel with "
              "BTF (CONFIG_DEBUG_INFO_BTF) or -DFLOWMARK_VMLINUX_BTF=<a vmlinux with BTF>")
    endif()
    add_custom_command(
      OUTPUT "${header}"
      COMMAND ${CMAKE_COMMAND} -E make_directory "${dir}"
      COMMAND ${BPFTOOL} btf dump file "${FLOWMARK_VMLINUX_BTF}" format c > "${header}.tmp"
      COMMAND ${CMAKE_COMMAND} -E rename "${header}.tmp" "${header}"
      COMMENT "BPF: vmlinux.h from ${FLOWMARK_VMLINUX_BTF}"
      VERBATIM)
    add_custom_target(flowmark_vmlinux_h DEPENDS "${header}")
  endif()
  set(${out_var} "${header}" PARENT_SCOPE)
endfunction()

# flowmark_bpf_object(SOURCE <file.bpf.c> OUTPUT <file.bpf.o> [VMLINUX]): the compile step
# alone (for objects loaded by other tools, such as `tc filter ... bpf obj`).
function(flowmark_bpf_object)
  cmake_parse_arguments(ARG "VMLINUX" "SOURCE;OUTPUT" "" ${ARGN})
  get_filename_component(src "${ARG_SOURCE}" ABSOLUTE)
  get_filename_component(src_dir "${src}" DIRECTORY)
  get_filename_component(out_dir "${ARG_OUTPUT}" DIRECTORY)
  # asm/types.h lives in the multiarch directory, which clang -target bpf does not search.
  set(arch_inc "")
  set(extra_deps "")
  if(ARG_VMLINUX)
    flowmark_bpf_vmlinux_h(vmlinux_h)
    get_filename_component(vmlinux_dir "${vmlinux_h}" DIRECTORY)
    set(arch_inc "-I${vmlinux_dir}")
    set(extra_deps "${vmlinux_h}")
  elseif(CMAKE_LIBRARY_ARCHITECTURE)
    set(arch_inc "-I/usr/include/${CMAKE_LIBRARY_ARCHITECTURE}")
  endif()
  add_custom_command(
    OUTPUT "${ARG_OUTPUT}"
    COMMAND ${CMAKE_COMMAND} -E make_directory "${out_dir}"
    COMMAND ${BPF_CLANG} -target bpf -O2 -g -Wall -Wextra -Werror ${arch_inc} -I${src_dir}
            -MD -MF "${ARG_OUTPUT}.d" -c "${src}" -o "${ARG_OUTPUT}"
    DEPENDS "${src}" ${extra_deps}
    DEPFILE "${ARG_OUTPUT}.d"
    COMMENT "BPF: clang -target bpf ${ARG_SOURCE}"
    VERBATIM)
endfunction()

function(flowmark_bpf_skeleton target)
  cmake_parse_arguments(ARG "VMLINUX" "SOURCE;NAME" "" ${ARGN})
  if(NOT ARG_SOURCE OR NOT ARG_NAME)
    message(FATAL_ERROR "flowmark_bpf_skeleton: SOURCE and NAME are required")
  endif()
  set(out_dir "${CMAKE_CURRENT_BINARY_DIR}/bpf_skel")
  set(obj "${out_dir}/${ARG_NAME}.bpf.o")
  set(linked "${out_dir}/${ARG_NAME}.linked.bpf.o")
  set(skel "${out_dir}/${ARG_NAME}.skel.h")
  set(vmlinux "")
  if(ARG_VMLINUX)
    set(vmlinux VMLINUX)
  endif()
  flowmark_bpf_object(SOURCE "${ARG_SOURCE}" OUTPUT "${obj}" ${vmlinux})
  add_custom_command(
    OUTPUT "${skel}"
    COMMAND ${BPFTOOL} gen object "${linked}" "${obj}"
    COMMAND ${BPFTOOL} gen skeleton "${linked}" name "${ARG_NAME}" > "${skel}"
    DEPENDS "${obj}"
    COMMENT "BPF ${ARG_NAME}: bpftool gen skeleton"
    VERBATIM)
  add_custom_target(${target}_gen DEPENDS "${skel}")
  add_library(${target} INTERFACE)
  # SYSTEM: the generated code is not ours to warn about.
  target_include_directories(${target} SYSTEM INTERFACE "${out_dir}")
  add_dependencies(${target} ${target}_gen)
endfunction()
