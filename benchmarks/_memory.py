"""Peak resident memory of this process, for the benchmarks' memory figures (Linux).

``reset_peak_rss`` clears the kernel's high-water mark (``/proc/self/clear_refs``) so that
``peak_rss_mib`` reports the peak of what ran since; without ``/proc`` it falls back to the
process's peak so far (``getrusage``).
"""

from __future__ import annotations

import resource

_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"


def reset_peak_rss() -> bool:
    """Reset this process's peak resident set (Linux ``clear_refs``); False if unsupported."""
    try:
        with open(_CLEAR_REFS, "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


def peak_rss_mib() -> float:
    """This process's peak resident set since the last reset (else since it started)."""
    try:
        with open(_STATUS) as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
