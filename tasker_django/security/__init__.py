"""Security behaviour of templates: masking, encryption at rest, access control."""
