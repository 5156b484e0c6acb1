"""An example team package for Worker Mesh (docs/your-workflow.md)."""
