"""import_leads: CSV files through the same ingestion as the API."""

from dataclasses import dataclass
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from audit.models import AuditEvent
from leads.intake.csv_import import CsvImportError, import_csv, parse_map_options
from leads.models import Lead, LeadSource
from leads.services import lead_create

HEADER = "E-mail,Full Name,Company,Country,Notes\n"


@dataclass
class Run:
    out: str
    err: str
    error: CommandError | None

    @property
    def bad_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("row ")]

    @property
    def correlation_id(self) -> str:
        line = next(x for x in self.out.splitlines() if x.startswith("Audit correlation id:"))
        return line.split(":", 1)[1].strip()


def run_import(path, *args, progress=False):
    out, err = StringIO(), StringIO()
    options = [str(path), *args] + ([] if progress else ["--no-progress"])
    try:
        call_command("import_leads", *options, stdout=out, stderr=err)
    except CommandError as exc:
        return Run(out.getvalue(), err.getvalue(), exc)
    return Run(out.getvalue(), err.getvalue(), None)


def write(tmp_path, text: str, *, name="leads.csv", encoding="utf-8", bom=False):
    path = tmp_path / name
    data = text.encode(encoding)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    return path


@pytest.fixture
def csv_source(db):
    return LeadSource.objects.create(
        name="Trade fair",
        slug="fair",
        kind=LeadSource.Kind.CSV,
        field_mapping={
            "E-mail": "email",
            "Full Name": "name",
            "Company": "company",
            "Country": "country",
        },
    )


def ingested_events(run: Run):
    return AuditEvent.objects.filter(event_type="lead_ingested", correlation_id=run.correlation_id)


# --- mapping --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_columns_mapped_by_the_source(tmp_path, csv_source):
    path = write(tmp_path, HEADER + "Ann@Example.com , Ann Lee,Acme,de,met at booth 4\n")

    run = run_import(path, "--source", "fair")

    assert run.error is None, run.err
    assert "Read 1 rows: 1 created, 0 duplicates merged, 0 bad." in run.out
    lead = Lead.objects.get()
    assert (lead.email, lead.name, lead.company, lead.country) == (
        "ann@example.com",
        "Ann Lee",
        "Acme",
        "DE",
    )
    assert lead.source == csv_source
    assert lead.extra == {"Notes": "met at booth 4"}
    event = ingested_events(run).get()
    assert event.lead_public_id == lead.public_id
    assert event.actor == "system"
    assert event.details["source"] == "fair"
    assert event.details["duplicate"] is False


@pytest.mark.django_db
def test_map_option_overrides_the_source(tmp_path, csv_source):
    path = write(
        tmp_path,
        "Work Email,E-mail,Name,Country\nann@acme.example,ann@home.example,Ann Lee,FR\n",
    )

    run = run_import(
        path,
        "--source",
        "fair",
        "--map",
        "Work Email=email",
        "--map",
        "E-mail=private_email",
        "--map",
        "Country=contry",  # a typo of a lead field: kept, as an extra key
    )

    assert run.error is None, run.err
    lead = Lead.objects.get()
    assert lead.email == "ann@acme.example"
    assert lead.country == ""
    assert lead.extra == {"private_email": "ann@home.example", "Name": "Ann Lee", "contry": "FR"}
    # Both look like lead fields: the operator is told how to map them.
    assert "note: column 'Country' is kept in extra as 'contry'" in run.err
    assert "--map 'Country=country'" in run.err
    assert "--map 'Name=name'" in run.err
    # The source itself is not changed by the options.
    csv_source.refresh_from_db()
    assert csv_source.field_mapping["E-mail"] == "email"


@pytest.mark.django_db
def test_map_option_to_a_lead_field(tmp_path, csv_source):
    path = write(tmp_path, "Mail;Name\nbob@example.com;Bob Stone\n")

    run = run_import(path, "--source", "fair", "--map", "Mail=email", "--map", "Name=name")

    assert run.error is None, run.err
    lead = Lead.objects.get()
    assert (lead.email, lead.name, lead.extra) == ("bob@example.com", "Bob Stone", {})


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("Work Email", "expected COLUMN=FIELD"),
        ("=email", "both the column and the field"),
        ("Work Email=", "both the column and the field"),
        ("Nope=email", "the file has no column 'Nope'"),
        ("Notes=_hidden", "neither a lead field"),
    ],
)
def test_bad_map_option(tmp_path, csv_source, option, message):
    path = write(tmp_path, HEADER + "ann@example.com,Ann,Acme,DE,x\n")

    run = run_import(path, "--source", "fair", "--map", option)

    assert run.error is not None
    assert message in str(run.error)
    assert not Lead.objects.exists()


def test_parse_map_options():
    assert parse_map_options(["a=b=email", " Full Name = name ", "x=1", "x=2"]) == {
        "a=b": "email",
        "Full Name": "name",
        "x": "2",
    }
    with pytest.raises(CsvImportError, match="expected COLUMN=FIELD"):
        parse_map_options(["email"])


@pytest.mark.django_db
def test_two_columns_for_one_field_refused(tmp_path, csv_source):
    path = write(tmp_path, "E-mail,email,Full Name\na@example.com,b@example.com,Ann\n")

    run = run_import(path, "--source", "fair")

    assert "columns 'E-mail' and 'email' both map to 'email'" in str(run.error)
    assert not Lead.objects.exists()


@pytest.mark.django_db
def test_duplicate_header_refused(tmp_path, csv_source):
    path = write(tmp_path, "E-mail,Notes,Notes\na@example.com,one,two\n")

    run = run_import(path, "--source", "fair")

    assert "column 'Notes' 2 times" in str(run.error)
    assert not Lead.objects.exists()


# --- delimiters and quoting -----------------------------------------------------------------


@pytest.mark.django_db
def test_semicolon_delimiter_sniffed(tmp_path, csv_source):
    path = write(
        tmp_path,
        'E-mail;Full Name;Company\nann@example.com;"Lee, Ann";Acme, Inc.\n'
        "bob@example.com;Bob;Stone & Co\n",
    )

    run = run_import(path, "--source", "fair")

    assert run.error is None, run.err
    assert "2 created" in run.out
    ann = Lead.objects.get(email="ann@example.com")
    assert (ann.name, ann.company) == ("Lee, Ann", "Acme, Inc.")


@pytest.mark.django_db
def test_single_column_file_falls_back_to_comma(tmp_path, csv_source):
    path = write(tmp_path, "E-mail\nann@example.com\nbob@example.com\n")

    run = run_import(path, "--source", "fair")

    assert run.error is None, run.err
    assert Lead.objects.count() == 2


@pytest.mark.django_db
def test_delimiter_option(tmp_path, csv_source):
    # Sniffing would see the commas; the option says the tab is the delimiter.
    path = write(tmp_path, "E-mail\tFull Name\nann@example.com\tLee, Ann\n")

    run = run_import(path, "--source", "fair", "--delimiter", "tab")

    assert run.error is None, run.err
    assert Lead.objects.get().name == "Lee, Ann"
    assert "--delimiter" in str(run_import(path, "--source", "fair", "--delimiter", ";;").error)


@pytest.mark.django_db
def test_multiline_cells_report_the_line_a_row_starts_on(tmp_path, csv_source):
    path = write(
        tmp_path,
        HEADER  # line 1
        + 'ann@example.com,Ann,Acme,DE,"first line\n'  # line 2, a record over lines 2-4
        + "second line\n"
        + 'third, with comma"\n'
        + "\n"  # line 5, blank: skipped
        + "not-an-email,Bob,,,\n"  # line 6
        + 'cid@example.com,Cid,,"Germany",\n'  # line 7
        + 'dee@example.com,Dee,,,"two\nlines"\n'  # lines 8-9
        + "eve@example.com,Eve,,x1,\n",  # line 10
    )

    run = run_import(path, "--source", "fair")

    assert run.bad_lines == [
        "row 6: E-mail: 'not-an-email' is not a valid email address.",
        "row 7: Country: Ensure this value has at most 2 characters (it has 7).",
        "row 10: Country: Use a two-letter country code (ISO 3166-1).",
    ]
    assert "Read 5 rows: 2 created, 0 duplicates merged, 3 bad." in run.out
    assert Lead.objects.get(email="ann@example.com").extra == {
        "Notes": "first line\nsecond line\nthird, with comma"
    }
    assert Lead.objects.get(email="dee@example.com").extra == {"Notes": "two\nlines"}


@pytest.mark.django_db
def test_crlf_line_endings_and_row_numbers(tmp_path, csv_source):
    # As a spreadsheet writes it: CRLF between records, LF inside a cell.
    path = write(
        tmp_path,
        "E-mail,Full Name,Notes\r\n"
        + 'ann@example.com,Ann,"a\nb"\r\n'
        + "bad,Bob,\r\n"
        + "cid@example.com,Cid,\r\n",
    )

    run = run_import(path, "--source", "fair")

    assert run.bad_lines == ["row 4: E-mail: 'bad' is not a valid email address."]
    assert Lead.objects.get(email="ann@example.com").extra == {"Notes": "a\nb"}
    assert Lead.objects.get(email="cid@example.com").name == "Cid"


@pytest.mark.django_db
def test_unclosed_quote_is_reported_not_swallowed_silently(tmp_path, csv_source):
    path = write(
        tmp_path,
        HEADER
        + "ann@example.com,Ann,,,\n"
        + 'bob@example.com,"Bob,,,\n'  # line 3: the quote is never closed
        + "cid@example.com,Cid,,,\n",
    )

    run = run_import(path, "--source", "fair")

    assert run.bad_lines == [
        "row 3: a quoted cell is never closed, so lines 3-4 (to the end of the file) "
        "were not imported"
    ]
    assert list(Lead.objects.values_list("email", flat=True)) == ["ann@example.com"]


# --- bad rows -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_bad_rows_reported_and_good_rows_imported(tmp_path, csv_source):
    long_name = "N" * 201
    path = write(
        tmp_path,
        HEADER
        + "ann@example.com,Ann,Acme,DE,\n"  # 2: good
        + "ann@example,Bad Email,,,\n"  # 3
        + ",No Email,Acme,,\n"  # 4
        + f"long@example.com,{long_name},,,\n"  # 5
        + "land@example.com,Land,,1A,\n"  # 6
        + "cells@example.com,Cells,Acme,DE,note,surplus\n"  # 7
        + ",,,,\n"  # 8: empty, skipped
        + "bob@example.com,Bob,,us,\n",  # 9: good
    )

    run = run_import(path, "--source", "fair", "--actor", "user:alice")

    assert run.bad_lines == [
        "row 3: E-mail: 'ann@example' is not a valid email address.",
        "row 4: E-mail: This field is required.",
        "row 5: Full Name: Ensure this value has at most 200 characters (it has 201).",
        "row 6: Country: Use a two-letter country code (ISO 3166-1).",
        "row 7: 6 cells, but the header has 5 columns (is a delimiter inside a cell not quoted?)",
    ]
    assert "Read 7 rows: 2 created, 0 duplicates merged, 5 bad." in run.out
    assert "5 bad rows were not imported; the 2 good rows were" in str(run.error)
    assert "row 3:" in str(run.error)
    assert sorted(Lead.objects.values_list("email", "country")) == [
        ("ann@example.com", "DE"),
        ("bob@example.com", "US"),
    ]
    events = ingested_events(run)
    emails = Lead.objects.filter(public_id__in=[e.lead_public_id for e in events])
    assert sorted(emails.values_list("email", flat=True)) == ["ann@example.com", "bob@example.com"]
    assert {e.actor for e in events} == {"user:alice"}
    # One import, one correlation id, and nothing else shares it.
    assert AuditEvent.objects.filter(correlation_id=run.correlation_id).count() == 2


@pytest.mark.django_db
def test_value_under_an_unnamed_column_is_a_bad_row(tmp_path, csv_source):
    path = write(
        tmp_path,
        "E-mail,Full Name,\nann@example.com,Ann,\nbob@example.com,Bob,stray\n",
    )

    run = run_import(path, "--source", "fair")

    assert run.bad_lines == ["row 3: column 3: Has a value but no header."]
    assert list(Lead.objects.values_list("email", flat=True)) == ["ann@example.com"]


@pytest.mark.django_db
def test_nul_character_is_a_bad_row(tmp_path, csv_source):
    # PostgreSQL text and jsonb columns refuse NUL: report it rather than fail the insert.
    path = write(tmp_path, HEADER + "ann@example.com,Ann,,,a\x00b\nbob@example.com,Bob,,,\n")

    run = run_import(path, "--source", "fair")

    assert run.bad_lines == ["row 2: Notes: Contains a NUL character."]
    assert Lead.objects.get().email == "bob@example.com"


@pytest.mark.django_db
def test_source_schema_applies_to_columns(tmp_path, csv_source):
    csv_source.schema = {"type": "object", "required": ["Company"]}
    csv_source.save()
    path = write(tmp_path, HEADER + "ann@example.com,Ann,Acme,,\nbob@example.com,Bob,,,\n")

    run = run_import(path, "--source", "fair")

    assert run.bad_lines == ["row 3: Company: This field is required."]
    assert Lead.objects.get().email == "ann@example.com"


@pytest.mark.django_db
def test_invalid_source_schema_refused_before_import(tmp_path, csv_source):
    csv_source.schema = {"type": "no-such-type"}
    csv_source.save()
    path = write(tmp_path, HEADER + "ann@example.com,Ann,Acme,,\n")

    run = run_import(path, "--source", "fair")

    assert "its JSON Schema is invalid" in str(run.error)
    assert not Lead.objects.exists()


# --- dedupe ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_duplicates_merge(tmp_path, csv_source):
    now = timezone.now()
    recent = lead_create(
        source=csv_source, email="old@example.com", name="Old", at=now - timedelta(hours=2)
    )
    stale = lead_create(
        source=csv_source, email="stale@example.com", at=now - timedelta(days=31)
    )  # outside the 30-day window: a new lead
    path = write(
        tmp_path,
        HEADER
        + "new@example.com,New,,,\n"
        + "NEW@example.com,Other Name,Acme,,second visit\n"
        + "old@example.com,Renamed,Old Co,,\n"
        + "stale@example.com,Stale,,,\n",
    )

    run = run_import(path, "--source", "fair")

    assert run.error is None, run.err
    assert "Read 4 rows: 2 created, 2 duplicates merged, 0 bad." in run.out
    assert Lead.objects.filter(email="new@example.com").count() == 1
    new = Lead.objects.get(email="new@example.com")
    # A duplicate fills what was empty and keeps what was there.
    assert (new.name, new.company, new.extra) == ("New", "Acme", {"Notes": "second visit"})
    recent.refresh_from_db()
    assert (recent.name, recent.company) == ("Old", "Old Co")
    assert Lead.objects.filter(email="stale@example.com").exclude(pk=stale.pk).count() == 1
    duplicates = ingested_events(run).filter(details__duplicate=True)
    assert sorted(e.lead_public_id for e in duplicates) == sorted([new.public_id, recent.public_id])


@pytest.mark.django_db
def test_running_again_merges_instead_of_creating(tmp_path, csv_source):
    path = write(tmp_path, HEADER + "ann@example.com,Ann,,,\nbob@example.com,Bob,,,\n")

    first = run_import(path, "--source", "fair")
    second = run_import(path, "--source", "fair")

    assert "2 created, 0 duplicates merged" in first.out
    assert "0 created, 2 duplicates merged" in second.out
    assert Lead.objects.count() == 2
    assert first.correlation_id != second.correlation_id
    assert ingested_events(second).count() == 2


# --- encodings ------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-8"])
def test_bom_prefixed_utf8(tmp_path, csv_source, encoding):
    path = write(tmp_path, HEADER + "zoe@example.com,Zoë Ångström,,,\n", bom=True)

    run = run_import(path, "--source", "fair", "--encoding", encoding)

    assert run.error is None, run.err
    assert Lead.objects.get().name == "Zoë Ångström"


@pytest.mark.django_db
def test_latin1_file_refused_before_anything_is_imported(tmp_path, csv_source):
    # The first data row is plain ASCII: it must not be imported either.
    text = HEADER + "ann@example.com,Ann,,,\nzoe@example.com,Zoë,,,\n"
    path = write(tmp_path, text, encoding="latin-1")

    run = run_import(path, "--source", "fair")

    assert "line 3: byte eb is not utf-8-sig" in str(run.error)
    assert "--encoding" in str(run.error)
    assert run.out == ""
    assert not Lead.objects.exists()
    assert not AuditEvent.objects.exists()

    run = run_import(path, "--source", "fair", "--encoding", "latin-1")

    assert run.error is None, run.err
    assert Lead.objects.get(email="zoe@example.com").name == "Zoë"


@pytest.mark.django_db
def test_unknown_encoding(tmp_path, csv_source):
    path = write(tmp_path, HEADER)

    assert "unknown encoding" in str(
        run_import(path, "--source", "fair", "--encoding", "klingon").error
    )


# --- refused before importing ---------------------------------------------------------------


@pytest.mark.django_db
def test_missing_email_column(tmp_path, csv_source):
    path = write(tmp_path, "Email,Full Name\nann@example.com,Ann\n")

    run = run_import(path, "--source", "fair")

    assert "no column maps to the lead's email" in str(run.error)
    assert "--map 'Email=email'" in str(run.error)
    assert not Lead.objects.exists()


@pytest.mark.django_db
def test_file_without_header(tmp_path, csv_source):
    # The first row is data: no column is named after the email.
    path = write(tmp_path, "ann@example.com,Ann\nbob@example.com,Bob\n")

    run = run_import(path, "--source", "fair")

    assert "no column maps to the lead's email" in str(run.error)
    assert not Lead.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("text", ["", "\n\n", ",,\n"])
def test_empty_file(tmp_path, csv_source, text):
    run = run_import(write(tmp_path, text), "--source", "fair")

    assert "the file is empty" in str(run.error)


@pytest.mark.django_db
def test_missing_file(tmp_path, csv_source):
    run = run_import(tmp_path / "nope.csv", "--source", "fair")

    assert "no such file" in str(run.error)


@pytest.mark.django_db
def test_unknown_source(tmp_path, csv_source):
    run = run_import(write(tmp_path, HEADER), "--source", "fiar")

    assert "--source 'fiar': no such lead source (known: fair)" in str(run.error)


@pytest.mark.django_db
def test_source_of_another_kind(tmp_path, web_source):
    path = write(tmp_path, "email,name\nann@example.com,Ann\n")

    run = run_import(path, "--source", "website")

    assert "'website' is a Web form source, not a CSV one" in str(run.error)
    assert "--any-kind" in str(run.error)
    assert not Lead.objects.exists()

    run = run_import(path, "--source", "website", "--any-kind")

    assert run.error is None, run.err
    assert Lead.objects.get().source == web_source


@pytest.mark.django_db
def test_bad_actor(tmp_path, csv_source):
    path = write(tmp_path, HEADER + "ann@example.com,Ann,,,\n")

    run = run_import(path, "--source", "fair", "--actor", "alice")

    assert "--actor" in str(run.error)
    assert not Lead.objects.exists()


# --- scale and progress ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db
def test_two_thousand_rows(tmp_path, csv_source):
    path = tmp_path / "big.csv"
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write(HEADER)
        for i in range(2000):
            handle.write(f"lead{i}@example.com,Lead {i},Company {i % 37},DE,\n")

    run = run_import(path, "--source", "fair", progress=True)

    assert run.error is None, run.err
    assert "Read 2000 rows: 2000 created, 0 duplicates merged, 0 bad." in run.out
    assert Lead.objects.count() == 2000
    assert ingested_events(run).count() == 2000
    # The bar went to stderr and reached the end of the file.
    assert "big.csv" in run.err
    assert "100%" in run.err


@pytest.mark.django_db
def test_progress_reports_bytes(tmp_path, csv_source):
    notes = "n" * 200
    path = write(tmp_path, HEADER + "".join(f"l{i}@example.com,L,,,{notes}\n" for i in range(200)))
    seen: list[tuple[int, int]] = []

    report = import_csv(
        path=path, source=csv_source, mapping=None, progress=lambda *a: seen.append(a)
    )

    size = path.stat().st_size
    assert report.created == 200
    assert len(seen) > 2
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert {total for _, total in seen} == {size}
    assert seen[-1] == (size, size)
