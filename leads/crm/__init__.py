"""CRM sync: a registry of connectors (one module per CRM) and the sync state."""
