"""Standalone scripts that stsc copies into task workspaces; they run inside sandboxes with the
standard library only and are never imported by stsc itself."""
