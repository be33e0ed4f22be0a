#!/usr/bin/env python3
"""Summarise a jemalloc heap profile (heap_v2, from a build with `--features jemalloc-profiling`): what was
live when it was written, by allocation site, as hack/dhat_summary.py does for dhat's.

    python3 hack/jeprof_summary.py <operator binary> <profile.heap> [top]

jemalloc samples one allocation in every 2^lg_prof_sample bytes on average; each sampled site's figures are
scaled back up the way jeprof does (an allocation of s bytes is sampled with probability 1 - exp(-s/rate)).
Frames are read with binutils' addr2line, inlined frames included, and a site is the first frame outside the
allocator and the standard library's collections (the same rule as the dhat summary's).
"""
import math
import re
import subprocess
import sys
from collections import defaultdict

from dhat_summary import SKIP

# The allocator's own frames, and the inlined allocation helpers of the standard library that addr2line names
# without their path (dhat's backtraces have these folded away).
ALLOCATOR = re.compile(
    r"^(_rjem_|je_|prof_|imalloc|ialloc|iralloc|do_rallocx|rallocx|tikv_jemalloc|__rg_alloc|__rg_realloc|"
    r"__rust_|_rjem)|jemalloc|"
    r"^(allocate|allocate_zeroed|box_new_uninit|box_new|new_uninit_in|try_new_uninit_in|try_allocate_in|"
    r"exchange_malloc|new_in|alloc_zeroed|grow|grow_impl|grow_impl_runtime|shrink|shrink_impl|shrink_impl_runtime|"
    r"shrink_unchecked|shrink_to_fit|finish_grow|reserve_rehash|resize|prepare_resize|fallible_with_capacity|"
    r"new_uninitialized|reserve_inner|with_capacity_and_hasher|with_capacity_and_hasher_in)(<.*)?$"
)


def parse(path):
    """The sample rate, each sampled stack's (live objects, live bytes), and the binary's load address."""
    rate = None
    stacks = []
    base = None
    binary_maps = False
    with open(path) as profile:
        lines = profile.read().splitlines()
    rate = int(lines[0].split("/", 1)[1])
    stack = None
    for line in lines[1:]:
        if line.startswith("@ "):
            stack = [int(a, 16) for a in line[2:].split()]
        elif line.startswith("  t*: ") and stack is not None:
            objects, rest = line[len("  t*: "):].split(": ", 1)
            stacks.append((stack, int(objects), int(rest.split(" ", 1)[0])))
            stack = None
        elif line == "MAPPED_LIBRARIES:":
            binary_maps = True
        elif binary_maps:
            fields = line.split()
            # The first mapping of the binary is its first load segment, at virtual address 0 of a PIE.
            if len(fields) >= 6 and fields[2] == "00000000" and fields[5].endswith("litellm-operator") and base is None:
                base = int(fields[0].split("-", 1)[0], 16)
    return rate, stacks, base


def scaled(objects, size, rate):
    if objects == 0 or size == 0:
        return 0.0
    average = size / objects
    return size / (1 - math.exp(-average / rate))


def symbolize(binary, addresses, base):
    """Each address's frames, innermost first (inlined calls included)."""
    inside = sorted({a for a in addresses if a >= base})
    names = {}
    if not inside:
        return names
    # A return address points after its call; one byte back is inside it.
    out = subprocess.run(
        ["addr2line", "-f", "-i", "-C", "-a", "-e", binary] + [hex(a - base - 1) for a in inside],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    current = None
    frames = []
    index = 0
    lookup = {hex(a - base - 1): a for a in inside}
    while index < len(out):
        line = out[index]
        if line.startswith("0x") and index + 1 < len(out) and not out[index + 1].startswith("0x"):
            key = hex(int(line, 16))
            if current is not None:
                names[current] = innermost_first(frames)
            current, frames = lookup.get(key), []
            index += 1
            continue
        frames.append(re.sub(r"::h[0-9a-f]{16}$", "", line))
        index += 2  # a function name, then its file and line
    if current is not None:
        names[current] = innermost_first(frames)
    return names


def innermost_first(frames):
    """addr2line names the enclosing (not inlined) function first, then the inlined calls innermost first."""
    return frames[1:] + frames[:1] if len(frames) > 1 else frames


def site(stack, names, depth):
    chosen = []
    for address in stack:
        for name in names.get(address, [hex(address)]):
            if (SKIP.search(name) or ALLOCATOR.search(name)) and not chosen:
                continue
            chosen.append(name)
            if len(chosen) >= depth:
                return " <- ".join(chosen)
    return " <- ".join(chosen) or "(allocator only)"


def main():
    binary, path = sys.argv[1], sys.argv[2]
    top = int(sys.argv[3]) if len(sys.argv) > 3 else 25
    rate, stacks, base = parse(path)
    if base is None:
        sys.exit(f"{path}: the binary's mapping is not in the profile")
    names = symbolize(binary, [a for stack, _, _ in stacks for a in stack], base)
    sites = defaultdict(lambda: [0.0, 0.0])
    total = 0.0
    for stack, objects, size in stacks:
        estimate = scaled(objects, size, rate)
        factor = estimate / size if size else 0
        key = site(stack, names, 4)
        sites[key][0] += estimate
        sites[key][1] += objects * factor
        total += estimate
    print(f"== {path}: {total / 2**20:.1f} MiB live (estimated from samples, one per {rate} bytes on average)")
    for key, (size, objects) in sorted(sites.items(), key=lambda kv: -kv[1][0])[:top]:
        print(f"{size / 2**20:8.2f} MiB {objects:11.0f} blocks  {key}")


if __name__ == "__main__":
    main()
