#!/usr/bin/env python3
"""Checks that the plugin's ABI changed only by appending.

Compares the public structs (those declared in abi/rm_plugin.h) and the
exported functions recorded in the committed abidw baseline with those of a
freshly built object: every struct of the baseline must still exist with its
members as an exact prefix (same names, offsets and types), members may only
be added after the old end, and no exported function may disappear.
(abidiff's own insertion suppressions, in libabigail 2.2, also hide inserts
in the middle of a struct, so they cannot decide this.)

usage: check_abi.py BASELINE.abi PLUGIN.so
       check_abi.py --self-test HEADER     (proves the check tells an
                                            append from other changes)
exit: 0 same or appended, 1 any other change, 77 abidw not installed
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

PUBLIC_HEADER = "rm_plugin.h"


def load(path):
    root = ET.parse(path).getroot()
    types = {}
    for element in root.iter():
        if "id" in element.attrib:
            types.setdefault(element.attrib["id"], element)
    return root, types


def type_name(types, type_id, depth=0):
    element = types.get(type_id)
    if element is None or depth > 40:
        return type_id
    tag = element.tag
    if tag in ("type-decl", "typedef-decl"):
        return element.get("name")
    if tag == "class-decl":
        return "struct " + element.get("name", "<anonymous>")
    if tag in ("union-decl", "enum-decl"):
        return tag.split("-")[0] + " " + element.get("name", "<anonymous>")
    if tag in ("pointer-type-def", "reference-type-def"):
        return type_name(types, element.get("type-id"), depth + 1) + "*"
    if tag == "qualified-type-def":
        qualifiers = "".join(q + " " for q in ("const", "volatile") if element.get(q) == "yes")
        return qualifiers + type_name(types, element.get("type-id"), depth + 1)
    if tag == "array-type-def":
        lengths = "".join("[%s]" % s.get("length", "?") for s in element.findall("subrange"))
        return type_name(types, element.get("type-id"), depth + 1) + lengths
    if tag == "function-type":
        parameters = []
        for parameter in element.findall("parameter"):
            if parameter.get("is-variadic") == "yes":
                parameters.append("...")
            else:
                parameters.append(type_name(types, parameter.get("type-id"), depth + 1))
        result = element.find("return")
        return "%s(%s)" % (type_name(types, result.get("type-id"), depth + 1),
                           ", ".join(parameters))
    return tag


def public_structs(path):
    root, types = load(path)
    structs = {}
    for element in root.iter("class-decl"):
        if not element.get("filepath", "").endswith(PUBLIC_HEADER):
            continue
        if element.get("is-declaration-only") == "yes" or element.get("name") is None:
            continue
        members = []
        for member in element.findall("data-member"):
            variable = member.find("var-decl")
            members.append((variable.get("name"), int(member.get("layout-offset-in-bits")),
                            type_name(types, variable.get("type-id"))))
        structs.setdefault(element.get("name"), (int(element.get("size-in-bits")), members))
    functions = {s.get("name") for s in root.iter("elf-symbol")
                 if s.get("type") == "func-type" and s.get("is-defined") == "yes"}
    return structs, functions


def compare(baseline_path, current_path):
    old_structs, old_functions = public_structs(baseline_path)
    new_structs, new_functions = public_structs(current_path)
    problems = []
    for name in sorted(old_functions - new_functions):
        problems.append("exported function %s was removed" % name)
    for name, (old_size, old_members) in sorted(old_structs.items()):
        if name not in new_structs:
            problems.append("struct %s disappeared" % name)
            continue
        new_size, new_members = new_structs[name]
        if new_members[:len(old_members)] != old_members:
            for old, new in zip(old_members, new_members):
                if old != new:
                    problems.append("struct %s: member %s (offset %d, %s) became %s (offset %d, %s)"
                                    % (name, old[0], old[1], old[2], new[0], new[1], new[2]))
                    break
            else:
                problems.append("struct %s lost members" % name)
            continue
        if new_size < old_size:
            problems.append("struct %s shrank from %d to %d bits" % (name, old_size, new_size))
        for added in new_members[len(old_members):]:
            if added[1] < old_size:
                problems.append("struct %s: %s placed at bit %d, inside the old size %d"
                                % (name, added[0], added[1], old_size))
    return problems, len(old_structs)


def abidw(shared_object, headers, out):
    subprocess.run(["abidw", "--headers-dir", headers, "--drop-private-types",
                    "--no-corpus-path", "--out-file", out, shared_object], check=True)


def self_test(header):
    """Builds a stand-in object from edited copies of the header and checks
    that an append passes while an insert, a retype and a removal fail."""
    stub = ('#include "rm_plugin.h"\n'
            '__attribute__((visibility("default"))) int32_t rm_plugin_negotiate('
            'const rm_negotiate_request *r, uint32_t *v, const rm_plugin_v1 **t)'
            '{ (void)r; *v = 0; *t = 0; return 0; }\n')
    text = open(header).read()
    anchor = "\n} rm_plugin_v1;"
    metrics = "    uint64_t over_budget;"
    assert anchor in text and metrics in text, "self-test anchors missing from header"
    variants = {
        "unchanged": (text, True),
        "append to vtable": (text.replace(anchor, "\n    int32_t (*added)(rm_context *c);"
                                                  "\n} rm_plugin_v1;"), True),
        "insert mid-struct": (text.replace(metrics, "    uint64_t inserted;\n" + metrics), False),
        "retype member": (text.replace(metrics, "    uint32_t over_budget_narrow; uint32_t pad;"), False),
    }
    work = tempfile.mkdtemp(prefix="rm-abi-selftest-")
    try:
        def build(name, content):
            directory = os.path.join(work, re.sub(r"\W", "_", name))
            os.makedirs(directory)
            with open(os.path.join(directory, PUBLIC_HEADER), "w") as f:
                f.write(content)
            with open(os.path.join(directory, "stub.c"), "w") as f:
                f.write(stub)
            so = os.path.join(directory, "stub.so")
            subprocess.run([os.environ.get("CC", "cc"), "-g", "-shared", "-fPIC",
                            "-fvisibility=hidden", "-I", directory,
                            os.path.join(directory, "stub.c"), "-o", so], check=True)
            xml = os.path.join(directory, "abi.xml")
            abidw(so, directory, xml)
            return xml
        baseline = build("baseline", text)
        failures = 0
        for name, (content, should_pass) in variants.items():
            problems, _ = compare(baseline, build(name, content))
            verdict = "pass" if not problems else "fail"
            expected = "pass" if should_pass else "fail"
            print("self-test %-18s -> %s (expected %s)%s" % (
                name, verdict, expected, (": " + problems[0]) if problems else ""))
            failures += verdict != expected
        return 1 if failures else 0
    finally:
        shutil.rmtree(work)


def main():
    if shutil.which("abidw") is None:
        print("abidw not found (Debian package abigail-tools): skipped")
        return 77
    if sys.argv[1] == "--self-test":
        return self_test(sys.argv[2])
    baseline, shared_object = sys.argv[1], sys.argv[2]
    headers = os.path.join(os.path.dirname(os.path.abspath(baseline)))
    with tempfile.TemporaryDirectory() as work:
        current = os.path.join(work, "current.abi")
        abidw(shared_object, headers, current)
        problems, checked = compare(baseline, current)
    if problems:
        print("ABI changed other than by appending (baseline %s):" % baseline)
        for problem in problems:
            print("  " + problem)
        print("A new minor version may only append. After an append, regenerate with\n"
              "  abidw --headers-dir abi --drop-private-types --no-corpus-path "
              "--out-file abi/rm_plugin.abi <build>/rm_plugin.so")
        return 1
    print("ABI of %d public structs matches the baseline (appends allowed)" % checked)
    return 0


if __name__ == "__main__":
    sys.exit(main())
