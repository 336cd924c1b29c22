"""Teach: train a small classifier head on a catalog's stored embeddings and serve it as a bundle.

Shared by the server (jobs), the CLI (`python -m training teach`) and bench/teach.py: no FastAPI,
no TensorFlow here. The HTTP routes live in app/api/teach.py.
"""
