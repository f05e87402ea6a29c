"""The `neurograph` proto package (see neurograph_client.neurograph.v1)."""
