"""The web side: Gradio tabs and the REST API, mounted on one FastAPI app. Nothing here imports torch."""
