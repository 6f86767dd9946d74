"""Write the example's PDF and DOCX documents (the committed copies came from this script).

The other documents in ``docs/`` (Markdown, HTML, plain text) are written by hand. The
PDF needs ``fpdf2`` (``pip install fpdf2``; not a tuneforge dependency), the DOCX
``python-docx`` (a tuneforge dependency). Run from anywhere:

    python examples/documents/make_documents.py
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

DOCS = Path(__file__).resolve().parent / "docs"

WARRANTY = {
    "title": "Atlas 3 Limited Warranty",
    "sections": [
        (
            "What the warranty covers",
            [
                "Fernwood Energy warrants the Atlas 3 home battery against defects in materials "
                "and workmanship for ten years from the date of installation, or until the "
                "battery has delivered 6,000 full charge cycles, whichever comes first.",
                "Fernwood also warrants that the battery will keep at least 70 percent of its "
                "usable capacity of 13.5 kWh, that is 9.45 kWh, for the same period. If the "
                "capacity falls below that level, Fernwood will repair or replace the battery.",
            ],
        ),
        (
            "What the warranty does not cover",
            [
                "The warranty does not cover damage caused by installation by anyone who is "
                "not a Fernwood certified installer, by flooding, fire or lightning, or by "
                "operating the battery outside its temperature range of -10 to 50 degrees "
                "Celsius. Cosmetic wear of the enclosure is not covered.",
                "Opening the enclosure, or removing the label with the serial number, voids "
                "the warranty.",
            ],
        ),
        (
            "How to make a claim",
            [
                "Make a claim through the Fernwood app under Help > Warranty claim, or ask "
                "your installer to make it for you. Include the serial number, which starts "
                "with AT3, the date of installation and a description of the problem.",
                "Fernwood answers every claim within five working days. A replacement battery "
                "is covered for the rest of the original warranty period or for two years, "
                "whichever is longer. Fernwood pays the installer's labour for a repair or a "
                "replacement under warranty.",
            ],
        ),
    ],
}

CHECKLIST = {
    "title": "Atlas 3 Installer Checklist",
    "sections": [
        (
            "Site survey",
            [
                "Confirm the wall can carry 118 kg per battery, plus the mounting bracket.",
                "Choose a spot out of direct sunlight, at least 1 metre from any door or "
                "window of a bedroom, and no higher than 2,000 metres above sea level.",
                "Measure the distance to the main switchboard: the battery cable between the "
                "gateway and the battery may be at most 15 metres long.",
            ],
        ),
        (
            "Mounting",
            [
                "Fix the bracket with the four M10 anchors supplied, level to within 2 degrees.",
                "Hang the battery on the bracket with two people, then fit the two safety "
                "screws at the bottom of the enclosure.",
                "Leave 30 cm of free space above the unit and 15 cm on each side.",
            ],
        ),
        (
            "Wiring",
            [
                "Install the gateway next to the main switchboard and wire the backup circuits "
                "through it. Large loads above 5 kW must stay on the non-backup side.",
                "Fit a 40 A DC isolator within sight of the battery.",
                "Connect the gateway to the home network with a cable; Wi-Fi is a fallback.",
            ],
        ),
        (
            "Commissioning",
            [
                "Switch on the isolator, then hold the battery's button for two seconds to "
                "start it. The ring light turns white when the battery is ready.",
                "Register the installation in the Fernwood installer app with the battery's "
                "serial number and the owner's email address.",
                "Run the outage test in the installer app: it opens the grid relay and checks "
                "that the backup circuits stay powered. Record the result in the handover form.",
            ],
        ),
    ],
}


def write_pdf(path: Path, document: dict) -> None:
    """A text PDF: a title, one bookmark per section, running header and page numbers."""
    from fpdf import FPDF

    class Pdf(FPDF):
        def header(self) -> None:
            self.set_font("Helvetica", size=8)
            self.cell(0, 6, "Fernwood Energy - Atlas 3 Limited Warranty", align="R")
            self.ln(10)

        def footer(self) -> None:
            self.set_y(-12)
            self.set_font("Helvetica", size=8)
            self.cell(0, 6, f"Page {self.page_no()}", align="C")

    pdf = Pdf()
    pdf.set_title(document["title"])
    pdf.set_author("Fernwood Energy Ltd")
    pdf.set_creation_date(datetime(2026, 9, 1, tzinfo=UTC))  # the same bytes each time
    for heading, paragraphs in document["sections"]:
        pdf.add_page()
        pdf.start_section(heading)
        pdf.set_font("Helvetica", style="B", size=14)
        pdf.multi_cell(0, 8, heading)
        pdf.ln(2)
        pdf.set_font("Helvetica", size=11)
        for paragraph in paragraphs:
            pdf.multi_cell(0, 6, paragraph)
            pdf.ln(3)
    pdf.output(str(path))


def write_docx(path: Path, document: dict) -> None:
    """A DOCX with Heading styles, numbered steps and core properties."""
    import docx

    out = docx.Document()
    out.core_properties.title = document["title"]
    out.add_heading(document["title"], level=1)
    for heading, steps in document["sections"]:
        out.add_heading(heading, level=2)
        for step in steps:
            out.add_paragraph(step, style="List Number")
    out.save(str(path))


def main() -> None:
    write_pdf(DOCS / "warranty.pdf", WARRANTY)
    write_docx(DOCS / "installer-checklist.docx", CHECKLIST)
    print(f"wrote {DOCS / 'warranty.pdf'} and {DOCS / 'installer-checklist.docx'}")


if __name__ == "__main__":
    main()
