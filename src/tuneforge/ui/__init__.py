"""The web UI (`tuneforge ui`): runs, data, playground, launch and feedback in Gradio."""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # the UI never calls home
