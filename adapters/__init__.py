"""External-system adapters (Label Studio, Detectron2, storage, HTTP)."""
