#!/usr/bin/env python3
"""Checks an Autobahn/kosoku index.json against the committed expectation.

Fails when any case is outside OK / NON-STRICT / INFORMATIONAL, and when any case's result
differs from expected.json (a regression or an improvement: both belong in review).
With --update DOC it rewrites expected.json and the table in DOC instead of comparing.
"""
import collections
import json
import sys

ACCEPTABLE = {"OK", "NON-STRICT", "INFORMATIONAL"}


def case_key(case):
    return [int(part) for part in case.split(".")]


def summarize(index_path):
    with open(index_path) as f:
        index = json.load(f)
    (agent,) = index.keys()
    cases = index[agent]
    return {
        case: {"behavior": r["behavior"], "behaviorClose": r["behaviorClose"]}
        for case, r in sorted(cases.items(), key=lambda kv: case_key(kv[0]))
    }


def write_doc(summary, doc_path):
    sections = collections.OrderedDict()
    for case, result in summary.items():
        section = case.split(".")[0]
        counts = sections.setdefault(section, collections.Counter())
        counts[result["behavior"]] += 1
    totals = collections.Counter(r["behavior"] for r in summary.values())
    names = {
        "1": "Framing", "2": "Pings/Pongs", "3": "Reserved bits", "4": "Opcodes",
        "5": "Fragmentation", "6": "UTF-8 handling", "7": "Close handling",
        "9": "Limits/performance", "10": "Miscellaneous",
        "12": "permessage-deflate, payloads", "13": "permessage-deflate, parameters",
    }
    lines = [
        "# Protocol conformance",
        "",
        "crier's `/echo` endpoint against every Autobahn TestSuite case, the permessage-deflate",
        "sections 12 and 13 included (RFC 7692; `/echo` compresses every reply on a connection",
        "that negotiated it), driven by the PyPI package `kosoku`. Run it with",
        "`tests/conformance/run`; `.ci/run` does, and fails",
        "when any case is FAILED or when any result differs from `tests/conformance/expected.json`",
        "(so regressions and improvements both show in review; `--update` rewrites both files).",
        "",
        "The broker runs with `--max-message-bytes 16777216` because section 9 sends messages",
        "of up to 16 MiB; with the default 1 MiB limit those cases are closed with 1009, as",
        "configured.",
        "",
        f"**{len(summary)} cases: " + ", ".join(f"{n} {b}" for b, n in sorted(totals.items()))
        + ("; none FAILED.**" if not any(b not in ACCEPTABLE for b in totals) else ".**"),
        "",
        "| section | what | cases | OK | NON-STRICT | INFORMATIONAL | FAILED |",
        "|---|---|---|---|---|---|---|",
    ]
    for section, counts in sections.items():
        failed = sum(n for b, n in counts.items() if b not in ACCEPTABLE)
        lines.append(
            f"| {section} | {names.get(section, '')} | {sum(counts.values())} | {counts['OK']} "
            f"| {counts['NON-STRICT']} | {counts['INFORMATIONAL']} | {failed} |"
        )
    informational = [c for c, r in summary.items() if r["behavior"] == "INFORMATIONAL"]
    lines += [
        "",
        "INFORMATIONAL cases record behaviour the RFC leaves open: " + ", ".join(informational) + ".",
        "",
    ]
    with open(doc_path, "w") as f:
        f.write("\n".join(lines))


def main(argv):
    index_path, expected_path = argv[1], argv[2]
    summary = summarize(index_path)
    bad = {c: r for c, r in summary.items() if r["behavior"] not in ACCEPTABLE or r["behaviorClose"] not in ACCEPTABLE}
    totals = collections.Counter(r["behavior"] for r in summary.values())
    print(f"conformance: {len(summary)} cases: {dict(totals)}")
    if "--update" in argv:
        with open(expected_path, "w") as f:
            json.dump(summary, f, indent=1, sort_keys=False)
            f.write("\n")
        write_doc(summary, argv[argv.index("--update") + 1])
        print(f"wrote {expected_path}")
    else:
        with open(expected_path) as f:
            expected = json.load(f)
        changed = sorted(
            (c for c in set(expected) | set(summary) if expected.get(c) != summary.get(c)), key=case_key
        )
        for case in changed:
            print(f"  {case}: expected {expected.get(case)}, got {summary.get(case)}")
        if changed:
            print(f"conformance: {len(changed)} cases differ from {expected_path} (run with --update if intended)")
            return 1
    for case, result in bad.items():
        print(f"  {case}: {result}")
    passed = len(summary) - len(bad)
    print(f"conformance: {passed} passed, {len(bad)} failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
