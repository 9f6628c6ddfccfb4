#!/usr/bin/env python3
"""Checks plugin/cuda/cuda_api.h against NVIDIA's cuda.h, where a CUDA
toolkit is installed (skipped otherwise: the build never needs one).

Every CUDA_*/CU_* value we define must equal cuda.h's, and every
function-pointer type named after a versioned symbol (PFN_<name>_v2) must
be the symbol cuda.h maps the plain name to."""
import glob
import os
import re
import sys

SKIP = 77


def main():
    ours = open(sys.argv[1]).read()
    candidates = [os.environ.get("CUDA_HOME", "") + "/include/cuda.h"]
    candidates += sorted(glob.glob("/usr/local/cuda*/include/cuda.h"))
    theirs_path = next((p for p in candidates if os.path.isfile(p)), None)
    if theirs_path is None:
        print("no cuda.h on this machine: skipped")
        return SKIP
    theirs = open(theirs_path).read()
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
    for symbol in re.findall(r"\(\*PFN_(\w+_v2)\)", ours):
        base = symbol[: -len("_v2")]
        mapped = re.search(r"#define %s\s+(?:__CUDA_API_PTDS\()?(\w+)" % base, theirs)
        checked += 1
        if mapped is None or mapped.group(1) != symbol:
            failures.append("%s: cuda.h maps %s to %s" % (symbol, base,
                            mapped.group(1) if mapped else "nothing"))
    for failure in failures:
        print(failure)
    print("%d checks against %s, %d failed" % (checked, theirs_path, len(failures)))
    return 1 if failures else 0


sys.exit(main())
