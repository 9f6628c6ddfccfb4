#!/usr/bin/env python3
"""Checks plugin/cuda/cuda_api.h and the entry point list of
plugin/cuda/cuda_driver.c against NVIDIA's cuda.h and cudaTypedefs.h,
where a CUDA toolkit is installed (skipped otherwise: the build never
needs one).

- Every CUDA_*/CU_* value we define must equal cuda.h's.
- Every function-pointer type named after a versioned symbol
  (PFN_<name>_v2) must be the symbol cuda.h maps the plain name to.
- Every entry point the loader binds, X(base, symbol, version): the symbol
  is the one cuda.h maps the base name to (the base name itself when
  cuda.h maps nothing), and the function cuGetProcAddress_v2 returns for
  that base name and version (the newest PFN_<base>_v<N> of
  cudaTypedefs.h with N <= version) takes the parameters our
  PFN_<symbol> declares. This is what catches a base name that a newer
  CUDA gave a new signature without a #define (cuCtxSynchronize, 13.0).
- The structs that cross the boundary by pointer (the VMM allocation
  properties and access descriptors, the handles): a small program that
  prints their sizes and field offsets is compiled once against cuda.h and
  once against ours, and the outputs must be equal (skipped, with a note,
  when no C compiler runs)."""
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

SKIP = 77


def parameter_types(text):
    """The types of a C parameter list, names and version suffixes
    dropped: "CUdeviceptr_v2 *dptr, size_t bytesize" -> ["CUdeviceptr*", "size_t"]."""
    text = " ".join(text.split())
    if text in ("", "void"):
        return []
    types = []
    for parameter in text.split(","):
        parameter = parameter.strip().replace("*", " * ")
        words = parameter.split()
        if len(words) > 1 and re.match(r"^[A-Za-z_]\w*$", words[-1]):
            words = words[:-1]  # the parameter's name
        words = [re.sub(r"_v\d+$", "", w) for w in words]
        words = [{"cuuint64_t": "uint64_t", "cuuint32_t": "uint32_t"}.get(w, w) for w in words]
        types.append(" ".join(words).replace(" *", "*"))
    return types


# The structs and fields whose layout must be cuda.h's.
LAYOUTS = {
    "CUmemGenericAllocationHandle": [],
    "CUdeviceptr": [],
    "CUuuid": [],
    "CUipcMemHandle": [],
    "CUipcEventHandle": [],
    "CUmemLocation": ["type", "id"],
    "CUmemAllocationProp": ["type", "requestedHandleTypes", "location", "location.type",
                            "location.id", "win32HandleMetaData", "allocFlags",
                            "allocFlags.compressionType", "allocFlags.gpuDirectRDMACapable",
                            "allocFlags.usage", "allocFlags.reserved"],
    "CUmemAccessDesc": ["location", "location.id", "flags"],
}


def layout_program(include):
    lines = ["#include %s" % include, "#include <stddef.h>", "#include <stdio.h>",
             "int main(void)", "{"]
    for name, fields in LAYOUTS.items():
        lines.append('    printf("sizeof %s %%zu\\n", sizeof(%s));' % (name, name))
        for field in fields:
            lines.append('    printf("offsetof %s.%s %%zu\\n", offsetof(%s, %s));'
                         % (name, field, name, field))
    lines += ["    return 0;", "}"]
    return "\n".join(lines) + "\n"


def layout_of(compiler, include, include_dir, workdir, tag):
    """The program's output, or None and why."""
    source = os.path.join(workdir, tag + ".c")
    binary = os.path.join(workdir, tag)
    with open(source, "w") as out:
        out.write(layout_program(include))
    built = subprocess.run([compiler, "-std=gnu11", "-I", include_dir, "-o", binary, source],
                           capture_output=True, text=True)
    if built.returncode != 0:
        return None, built.stderr.strip()
    ran = subprocess.run([binary], capture_output=True, text=True)
    return ran.stdout, None


def compare_layouts(ours_path, cuda_h_path, failures):
    """Sizes and offsets from both headers; the number of checks made."""
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None:
        print("no C compiler: struct layouts not compared")
        return 0
    with tempfile.TemporaryDirectory() as workdir:
        theirs, why = layout_of(compiler, "<cuda.h>", os.path.dirname(cuda_h_path), workdir,
                                "theirs")
        if theirs is None:
            print("cuda.h does not compile here (%s): struct layouts not compared" % why)
            return 0
        ours, why = layout_of(compiler, '"%s"' % os.path.basename(ours_path),
                              os.path.dirname(os.path.abspath(ours_path)), workdir, "ours")
        if ours is None:
            failures.append("cuda_api.h does not compile alone: %s" % why)
            return 1
    theirs_lines = theirs.splitlines()
    ours_lines = ours.splitlines()
    for want, got in zip(theirs_lines, ours_lines):
        if want != got:
            failures.append("layout: cuda.h %s, ours %s" % (want, got))
    return len(theirs_lines)


def main():
    ours_path = sys.argv[1]
    ours = open(ours_path).read()
    cuda_dir = os.path.dirname(os.path.abspath(ours_path))
    driver_c = open(os.path.join(cuda_dir, "cuda_driver.c")).read()
    driver_h = open(os.path.join(cuda_dir, "cuda_driver.h")).read()
    candidates = [os.environ.get("CUDA_HOME", "") + "/include/cuda.h"]
    candidates += sorted(glob.glob("/usr/local/cuda*/include/cuda.h"))
    theirs_path = next((p for p in candidates if os.path.isfile(p)), None)
    if theirs_path is None:
        print("no cuda.h on this machine: skipped")
        return SKIP
    theirs = open(theirs_path).read()
    typedefs_path = os.path.join(os.path.dirname(theirs_path), "cudaTypedefs.h")
    typedefs = open(typedefs_path).read() if os.path.isfile(typedefs_path) else None
    failures = []
    checked = 0
    for name, value in re.findall(r"^#define ((?:CUDA|CU)_[A-Z0-9_]+) (\S+)$", ours, re.M):
        if name == "CU_IPC_HANDLE_SIZE":
            pattern = r"#define CU_IPC_HANDLE_SIZE (\S+)"
        else:
            pattern = r"\b%s\s*=\s*(\d+ << \d+|0[xX][0-9a-fA-F]+|\d+)" % name
        found = re.search(pattern, theirs)
        if found is None:
            failures.append("%s: not in %s" % (name, theirs_path))
            continue
        want = eval(found.group(1).replace("u", ""))  # ints and shifts only
        got = eval(value.rstrip("u"))
        checked += 1
        if want != got:
            failures.append("%s: ours %s, cuda.h %s" % (name, value, found.group(1)))

    def mapped(base):
        found = re.search(r"^#define %s\s+(?:__CUDA_API_PT(?:DS|SZ)\()?(\w+)" % base, theirs,
                          re.M)
        return found.group(1) if found else None

    for symbol in re.findall(r"\(\*PFN_(\w+_v2)\)", ours):
        base = symbol[: -len("_v2")]
        checked += 1
        if mapped(base) != symbol:
            failures.append("%s: cuda.h maps %s to %s" % (symbol, base, mapped(base) or "nothing"))

    # The loader's entry points: which symbol, and the signature at the
    # version it asks for.
    versions = {
        "API_VERSION": int(re.search(r"#define RM_CUDA_DRIVER_API_VERSION (\d+)", driver_h).group(1)),
    }
    for name, value in re.findall(r"^#define (\w+) (\d+)\b", driver_c, re.M):
        versions[name] = int(value)
    entries = re.findall(r"X\((\w+), (\w+), (\w+)\)", driver_c)
    declared = {m.group(1): parameter_types(m.group(2))
                for m in re.finditer(r"typedef CUresult \(\*PFN_(\w+)\)\((.*?)\);", ours, re.S)}
    if not entries:
        failures.append("no X(base, symbol, version) entry points found in cuda_driver.c")
    for base, symbol, version_name in entries:
        checked += 1
        want = mapped(base) or base
        if want != symbol:
            failures.append("%s: bound to %s, cuda.h maps it to %s" % (base, symbol, want))
        if symbol not in declared:
            failures.append("%s: no PFN_%s in %s" % (base, symbol, ours_path))
            continue
        if typedefs is None:
            continue
        version = versions.get(version_name, None)
        if version is None:
            failures.append("%s: unknown version %s" % (base, version_name))
            continue
        candidates = [(int(v), params) for v, params in re.findall(
            r"typedef CUresult \(CUDAAPI \*PFN_%s_v(\d+)\)\((.*?)\);" % base, typedefs, re.S)]
        candidates = [c for c in candidates if c[0] <= version]
        checked += 1
        if not candidates:
            failures.append("%s: cudaTypedefs.h has no PFN_%s_v<N> with N <= %d"
                            % (base, base, version))
            continue
        newest, params = max(candidates)
        if parameter_types(params) != declared[symbol]:
            failures.append("%s asked for at version %d gets PFN_%s_v%d(%s), ours PFN_%s(%s)"
                            % (base, version, base, newest, ", ".join(parameter_types(params)),
                               symbol, ", ".join(declared[symbol])))
    checked += compare_layouts(ours_path, theirs_path, failures)
    for failure in failures:
        print(failure)
    print("%d checks against %s%s, %d failed" % (
        checked, theirs_path, " and cudaTypedefs.h" if typedefs else "", len(failures)))
    return 1 if failures else 0


sys.exit(main())
