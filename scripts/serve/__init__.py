"""The servers' launchers: one per server, shared by `make serve`, the tests and the benchmarks.

  torchserve.py   python -m scripts.serve.torchserve start|stop|status|key|curl|rotate
  tfserving.py    python -m scripts.serve.tfserving start|stop|status|reload
  processes.py    background process groups that are stopped whole and never mistaken
  docker_e2e.sh   make docker-e2e: the compose stack on local stand-ins of the official images
"""
