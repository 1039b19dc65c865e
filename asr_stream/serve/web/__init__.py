"""The caption page the daemon serves at / (HTML, its script and its AudioWorklet)."""
