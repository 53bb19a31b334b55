"""EMV card applications: reader flow, Data Object Lists, terminal risk management.

- :mod:`terminal.emv.reader`: application selection, GPO, READ RECORD (Book 1 §12, Book 3 §10)
- :mod:`terminal.emv.dol`: DOL parsing and building (Book 3 §5.4)
- :mod:`terminal.emv.risk`: terminal risk management and the TVR (Book 3 §10.6, Annex C5)
- :mod:`terminal.emv.app`: the card application the transaction core calls
"""
