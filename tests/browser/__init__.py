"""Real-browser tests: JupyterLab and the HTML report in headless Chromium."""
