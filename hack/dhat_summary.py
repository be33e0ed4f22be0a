#!/usr/bin/env python3
"""Summarise a dhat heap profile: what was live at the peak (t-gmax), by allocation site.

    python3 hack/dhat_summary.py dhat-heap.json [top]

A site is the first frame of the backtrace outside the allocator and the standard library's collections, so
that "a String inside a LiteLLMUser in the reflector store" and "a String in a JSON body" come apart.
"""
import json
import re
import sys
from collections import defaultdict

SKIP = re.compile(
    r"^(alloc|alloc_impl|alloc_impl_runtime|__rust_alloc|try_allocate_in|with_capacity_in|with_capacity|"
    r"allocate_in|grow_one|grow_amortized|finish_grow|reserve|reserve_for_push|push|clone|to_vec|to_vec_in|"
    r"to_owned|from|into|new|extend|extend_desugared|spec_extend|collect|from_iter|insert|realloc|"
    r"do_reserve_and_handle|try_reserve|\{closure#\d+\}|\{async_fn#\d+\}|call_once|call_mut)(<.*)?$|"
    r"dhat::|alloc::(alloc|raw_vec|vec|string|boxed|collections|sync|rc|fmt|str|slice|borrow)|__rust|"
    r"core::|<alloc::|hashbrown::|std::collections|<T as alloc|bytes::|serde_json::value|indexmap::|"
    r"<serde_json|serde::de|serde_core::|<serde::|<&mut serde_json|serde_json::de|<core::|std::sys|smallvec"
)


def site(frames, ftbl, depth):
    chosen = []
    for index in frames:
        frame = ftbl[index]
        name = frame.split(": ", 1)[-1] if ": " in frame else frame
        name = re.sub(r" \(.*\)$", "", name)
        if SKIP.search(name) and not chosen:
            continue
        chosen.append(re.sub(r"::h[0-9a-f]{16}$", "", name))
        if len(chosen) >= depth:
            break
    return " <- ".join(chosen) or "(allocator only)"


def main():
    path = sys.argv[1]
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    profile = json.load(open(path))
    ftbl = profile["ftbl"]
    at_peak = defaultdict(lambda: [0, 0])
    total = 0
    for pp in profile["pps"]:
        key = site(pp["fs"], ftbl, 4)
        at_peak[key][0] += pp["gb"]
        at_peak[key][1] += pp["gbk"]
        total += pp["gb"]
    print(f"== {path}: {total / 2**20:.1f} MiB live at the peak (t-gmax)")
    for key, (size, blocks) in sorted(at_peak.items(), key=lambda kv: -kv[1][0])[:top]:
        print(f"{size / 2**20:8.2f} MiB {blocks:9d} blocks  {key}")


if __name__ == "__main__":
    main()
