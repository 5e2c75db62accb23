"""The tests: ``unit`` (pure logic, on the fakes of ``fakes.py``), ``contract`` (one store
suite on the fakes and on Firestore), ``integration`` and ``e2e`` (on the real emulators)."""
