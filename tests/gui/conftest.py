"""Qt without a display: every GUI test runs on the offscreen platform."""

import os

# Before any QApplication exists (pytest-qt makes it lazily, in the qapp fixture).
os.environ["QT_QPA_PLATFORM"] = "offscreen"
