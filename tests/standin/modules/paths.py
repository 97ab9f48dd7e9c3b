import tempfile

models_path = tempfile.mkdtemp(prefix="standin-models-")
