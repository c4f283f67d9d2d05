class PaymentDeclined(Exception):
    """An exception class of the project's own (its path must survive into TaskError.exception_class_path)."""
