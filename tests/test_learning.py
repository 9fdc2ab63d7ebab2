"""Does it learn: the quickstart's claim, checked end to end on the real defaults."""

import json

import pytest

from agents.quickstart import QuickstartConfig, quickstart


@pytest.mark.slow
def test_diffusion_keeps_both_modes_and_beats_mlp_bc(tmp_path):
    report_md = quickstart(QuickstartConfig(out=str(tmp_path / "qs")), progress=False)
    report = json.loads(report_md.with_suffix(".json").read_text())
    diffusion, mlp = report["policies"]["diffusion"], report["policies"]["mlp"]
    assert diffusion["episodes"] == mlp["episodes"] == 50
    assert diffusion["success_rate"] >= 0.9
    assert mlp["success_rate"] <= diffusion["success_rate"] - 0.25
    assert all(0.3 <= share <= 0.7 for share in diffusion["mode_coverage"].values())
    assert (tmp_path / "qs" / "success.png").is_file() and (tmp_path / "qs" / "paths.png").is_file()
    assert report["files"]["video"] in ("diffusion.mp4", "diffusion.gif")
