"""Plots people read and the one-page HTML report (issue 26, item 2): noise level t on the
x axis with chance lines, the goal in the property's unit, improvement against weight,
loss curves whose warm-up spike does not flatten the rest, and a self-contained report."""

from __future__ import annotations

import base64
import math
import re

import numpy as np
import pytest

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _noise_rows(kind: str = "bound", n_bins: int = 10) -> list:
    """Rows as noise_level_diagnostics returns them for a 3-class gap classifier: CE rising
    from 0.45 (clean) to chance (pure noise), the guidance error spanning four decades."""
    from molguide.diagnostics.noise_levels import NoiseLevelRow

    rows = []
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        ce = 0.45 + (math.log(3) - 0.45) * ((b + 0.5) / n_bins) ** 2
        bound = 2.0e3 * 10 ** (-4 * b / (n_bins - 1))
        rows.append(
            NoiseLevelRow(
                bin=b,
                t_low=lo,
                t_high=hi,
                classifier_ce=ce,
                classifier_accuracy=0.8 - 0.45 * b / n_bins,
                classifier_ece=0.02 + 0.01 * b,
                grad_lipschitz=5.0,
                lipschitz_bound=50.0,
                guidance_mse_est=bound if kind == "bound" else bound / 7,
                guidance_mse_bound=bound,
                guidance_mse_cfg=math.nan if kind == "bound" else bound / 7,
                guidance_mse_kind=kind,
                n=256,
            )
        )
    return rows


def _target(target="high"):
    from molguide.guidance.targets import PropertyTarget

    return PropertyTarget("gap_eV", thresholds=[6.2, 7.505], target=target).fit(np.zeros(1))


def _constant_lines(ax) -> list[float]:
    """The y of every horizontal line drawn across an axes (axhline)."""
    return [float(line.get_ydata()[0]) for line in ax.lines if len(set(np.ravel(line.get_ydata()))) == 1]


def test_noise_level_figure_has_t_on_the_x_axis_and_chance_lines_at_log_k_and_1_over_k():
    import matplotlib.pyplot as plt

    from molguide.diagnostics.plots import chance_levels, noise_level_t, noise_levels_figure

    assert chance_levels(3) == pytest.approx((1.0986, 1 / 3), abs=1e-4)
    with pytest.raises(ValueError):
        chance_levels(1)
    rows = _noise_rows()
    fig = noise_levels_figure(rows, "gap_eV classifier", num_classes=3)
    ce_ax, acc_ax, err_ax = fig.axes
    ce_line = ce_ax.lines[0]
    # x is the bin centre in t (0.05 .. 0.95), not the bin index 0 .. 9
    assert np.allclose(ce_line.get_xdata(), np.arange(10) / 10 + 0.05)
    assert ce_ax.get_xlim() == (0.0, 1.0)
    assert _constant_lines(ce_ax) == [pytest.approx(math.log(3))]
    assert _constant_lines(acc_ax) == [pytest.approx(1 / 3)]
    assert "log 3 = 1.099" in [t.get_text() for t in ce_ax.get_legend().get_texts()][1]
    # the bound spans four decades: log axis, and it says it is a bound
    assert err_ax.get_yscale() == "log"
    assert "bound" in err_ax.get_ylabel() and "bound" in err_ax.get_title()
    plt.close(fig)

    fig = noise_levels_figure(_noise_rows("cfg"), num_classes=5)
    assert _constant_lines(fig.axes[0]) == [pytest.approx(math.log(5))]
    assert "bound" not in fig.axes[2].get_ylabel() and len(fig.axes[2].lines) == 2  # estimate and bound
    plt.close(fig)
    fig = noise_levels_figure(rows)  # K unknown: no chance line is made up
    assert _constant_lines(fig.axes[0]) == []
    plt.close(fig)
    # stored rows without t_low / t_high: the centres of n equal bins
    assert noise_level_t([{"bin": b} for b in range(4)]) == [0.125, 0.375, 0.625, 0.875]


def test_loss_curves_keep_the_warm_up_spike_from_flattening_the_rest(tmp_path):
    import matplotlib.pyplot as plt

    from molguide.diagnostics.plots import loss_curves_figure, plot_loss_curves

    rng = np.random.default_rng(0)
    steps = np.arange(1, 401)
    score = 0.5 + 0.3 * np.exp(-steps / 80) + 0.02 * rng.standard_normal(400)
    score[:5] = [40.0, 25.0, 9.0, 3.0, 1.5]  # warm-up spike
    classifier = 1.1 * np.exp(-steps / 150) + 0.6
    curves = {"score": list(zip(steps, score)), "classifier": list(zip(steps, classifier))}
    fig = loss_curves_figure(curves)
    assert fig.axes[0].get_yscale() == "log"
    assert [t.get_text().split(" (")[0] for t in fig.axes[0].get_legend().get_texts()] == [
        "score",
        "classifier",
    ]
    plt.close(fig)
    # a negative log-likelihood cannot go on a log axis: the spike is clipped instead
    nll = list(zip(steps, score - 1.0))
    fig = loss_curves_figure({"regressor": nll})
    ax = fig.axes[0]
    assert ax.get_yscale() == "linear" and ax.get_ylim()[1] < 5.0 and "clipped" in ax.get_ylabel()
    plt.close(fig)
    assert plot_loss_curves(curves, tmp_path / "loss.png").read_bytes().startswith(PNG_SIGNATURE)


def test_targets_and_axes_are_written_in_the_property_unit():
    from molguide.diagnostics.plots import axis_label, property_label, target_text

    assert target_text(_target()) == "gap_eV >= 7.505"
    assert target_text(_target("low")) == "gap_eV < 6.2"
    assert target_text(_target(1)) == "gap_eV in [6.2, 7.505)"
    assert axis_label("gap_eV", "evaluator") == "HOMO-LUMO gap (eV), evaluator"
    assert property_label("evaluator_alpha_bohr3") == ("alpha", "isotropic polarizability", "bohr^3")
    assert property_label("logp") == ("logp", "logp", "")


def test_sweep_reads_weights_from_setting_names():
    from molguide.diagnostics.plots import _weights_of

    results = {
        "unguided": {},
        "classifier_w4": {"a": 4},
        "classifier_w0.5": {"a": 0.5},
        "classifier_wide": {},
    }
    assert [w for w, _ in _weights_of(results, "classifier")] == [0.5, 4.0]


def _strict_mol(name: str, gap: float, strict: bool = True):
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles("CCO" if strict else "C[N+](=O)[O-]"))
    AllChem.EmbedMolecule(mol, randomSeed=1)
    mol.SetProp("_Name", name)
    for key, value in dict(valid="1" if strict else "0", valid_strict="1" if strict else "0").items():
        mol.SetProp(key, value)
    mol.SetProp("fragments", "1")
    mol.SetProp("charged_atoms", "0" if strict else "2")
    mol.SetProp("evaluator_gap_eV", repr(gap))
    return mol


def test_grid_keeps_invalid_molecules_out_unless_a_setting_has_no_valid_one():
    from molguide.diagnostics.plots import grid_cells, grid_title, value_label

    rows = {
        "unguided": [_strict_mol("bad", 5.0, strict=False), _strict_mol("u1", 6.1234)],
        "classifier_w2": [_strict_mol("lost", 7.9, strict=False)],
    }
    assert value_label(rows["unguided"][1], "evaluator_gap_eV") == "gap 6.12 eV"
    cells = grid_cells(rows, per_row=2, label_prop="evaluator_gap_eV")
    assert [None if m is None else m.GetProp("_Name") for m, _ in cells] == ["u1", None, "lost", None]
    assert cells[0][1] == "unguided: gap 6.12 eV"
    assert cells[2][1] == "classifier_w2: gap 7.90 eV (EDM-invalid, charged)"
    title = grid_title(rows, "evaluator_gap_eV")
    assert "predicted HOMO-LUMO gap (eV)" in title and "NO strictly valid molecule in: classifier_w2" in title
    assert "NO strictly" not in grid_title({"unguided": rows["unguided"]})


def test_html_report_is_one_self_contained_escaped_page_with_every_plot(tmp_path):
    from molguide.diagnostics.html_report import write_html_report
    from molguide.diagnostics.plots import plot_histograms, plot_molecule_grid, plot_noise_levels, plot_sweep

    rng = np.random.default_rng(1)
    nan = np.full(200, np.nan)
    judged = {
        "unguided": {"evaluator": rng.normal(6.8, 1.0, 200), "xtb": nan},
        "classifier_w2": {"evaluator": rng.normal(7.0, 1.0, 200), "xtb": nan},
    }
    base = {"target_hit_rate": 0.33, "validity": 0.93}
    results = {
        "unguided": base,
        "classifier_w1": {**base, "property_improvement": 0.08, "property_improvement_ci_low": 0.01,
                          "property_improvement_ci_high": 0.15, "target_hit_rate": 0.38},
        "classifier_w2": {**base, "property_improvement": 0.147, "property_improvement_ci_low": 0.06,
                          "property_improvement_ci_high": 0.23, "target_hit_rate": 0.42},
        "reward_w2": {**base, "property_improvement": 0.362, "property_improvement_ci_low": 0.27,
                      "property_improvement_ci_high": 0.45, "target_hit_rate": 0.51},
    }  # fmt: skip
    plots = [
        plot_noise_levels(_noise_rows(), tmp_path / "noise_levels.png", "gap_eV classifier", num_classes=3),
        plot_histograms(judged, _target(), tmp_path / "property_histograms.png"),
        plot_sweep(results, tmp_path / "improvement_vs_weight.png", unit="eV"),
        plot_molecule_grid({"unguided": [_strict_mol("u1", 6.5)]}, tmp_path / "grid.png", "evaluator_gap_eV"),
    ]
    title = 'quickstart <gap_eV >= 7.505> & "more"'
    summary = "setting        improvement (eV)\nreward_w2      +0.362 [0.27, 0.45]"
    table = [{"bin": 0, "t": 0.05, "classifier_ce": 0.4512}, {"bin": 1, "t": 0.15, "classifier_ce": None}]
    config = "name: quickstart\nguide:\n  classifier: 2.0\n  note: <b>bold</b>\n"
    command = "molguide run quickstart --set guide.reward=2 -c 'runs/quickstart/config.yaml'"
    out = write_html_report(
        tmp_path / "report" / "report.html",
        title,
        [("Summary", summary), ("Noise levels", table)],
        [*plots, tmp_path / "never_written.png"],
        config,
        command,
    )
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "<h1>quickstart &lt;gap_eV &gt;= 7.505&gt; &amp; &quot;more&quot;</h1>" in page
    assert title not in page
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)">', page)
    assert [alt for alt, _ in images] == [p.stem for p in plots]
    for _, data in images:
        assert base64.b64decode(data).startswith(PNG_SIGNATURE)
    assert "never_written.png: not written" in page
    assert "<pre>setting        improvement (eV)\nreward_w2      +0.362 [0.27, 0.45]</pre>" in page
    assert "<th>classifier_ce</th>" in page and "<td>0.4512</td>" in page and "<td>-</td>" in page
    assert f"<pre><code>{command.replace(chr(39), '&#x27;')}</code></pre>" in page
    details = page[page.index("<details>") : page.index("</details>")]
    assert "guide:\n  classifier: 2.0\n  note: &lt;b&gt;bold&lt;/b&gt;" in details and "<b>" not in page
    assert "generated " in page and " UTC by molguide " in page
    # offline: no script, no external stylesheet, font or link
    assert "<script" not in page.lower() and "http" not in page.lower()
    assert "<link" not in page and "href=" not in page and "@import" not in page and "url(" not in page
