import polymodal


def test_all_names_exist_and_are_documented():
    assert len(polymodal.__all__) == len(set(polymodal.__all__))
    for name in polymodal.__all__:
        obj = getattr(polymodal, name)
        if callable(obj):
            assert obj.__doc__, f"{name} has no docstring"


def test_headline_names_exported():
    for name in (
        "extract",
        "extract_many",
        "Invoice",
        "Receipt",
        "Image",
        "Document",
        "Limits",
        "InputError",
    ):
        assert name in polymodal.__all__
