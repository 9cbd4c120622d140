"""The job's thread budget for native libraries, set before they load (see `limit_native_threads`)."""

import os


def limit_native_threads(argv: list[str]) -> None:
    """`--threads N` is the job's CPU budget: hold OpenMP, OpenBLAS and MKL to it too, before numpy
    and torch load them. Without this numpy's OpenBLAS starts a thread per core and its
    busy-waiting threads compete with the other jobs of a full machine (torch.set_num_threads
    covers only torch's own pool)."""
    for i, arg in enumerate(argv):
        value = arg.split("=", 1)[1] if arg.startswith("--threads=") else (argv[i + 1] if arg == "--threads" and i + 1 < len(argv) else None)
        if value is not None and value.isdigit() and int(value) > 0:
            for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
                os.environ[name] = value
            return
