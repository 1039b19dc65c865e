"""The daemon: WebSocket server, protocol, OpenAI-style and Wyoming endpoints, worker processes, Prometheus metrics, its client, the load tester, the caption page."""
