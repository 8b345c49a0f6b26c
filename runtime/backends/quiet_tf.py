"""Import TensorFlow without its C++ start-up notices on stderr.

TensorFlow 2.21 writes absl's pre-initialisation banner and INFO lines (oneDNN, missing CUDA
drivers) straight to file descriptor 2 while it is imported and finds its devices, whatever
TF_CPP_MIN_LOG_LEVEL says; they would bury the CLIs' one-line errors. Everything else written
meanwhile is kept.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile

# absl's banner, C++ INFO/WARNING records such as "I0000 00:00:17.. 1234 port.cc:153] ...", and
# the cuInit failure of a machine without a GPU (the runtime's DeviceError says that, in one line).
_NOTICE = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\)|[IW]\d{4} \d\d:\d\d:"
                     r"|E\d{4} \d\d:\d\d:.*failed call to cuInit)")


def import_tensorflow():
    """Return the tensorflow module, imported with its start-up notices filtered from stderr."""
    if sys.modules.get("tensorflow") is not None:  # None marks a blocked import: let it raise below
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the C++ logs that do honour it
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow

            tensorflow.config.list_physical_devices()  # CUDA start-up logs now, inside the filter
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode(errors="replace").splitlines(keepends=True)
                    if not _NOTICE.match(line)]
            sys.stderr.write("".join(kept))
    return tensorflow
