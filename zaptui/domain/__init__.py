"""The domain: profiles, address cleansing and field mapping. Pure Python."""
