"""Adapters to Google Cloud (Firestore, Pub/Sub, Cloud Storage), each behind a small interface."""
