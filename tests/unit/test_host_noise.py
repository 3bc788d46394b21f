"""The host-noise benchmark's pairing of calibration boxes with later stream windows."""

from __future__ import annotations

import pytest

from benchmarks.bench_host_noise import Box, main, parse_series, perfect_model_floor, window_means


def series(values: list[float], step: float = 1.0) -> list[Box]:
    return [Box(i * step, v) for i, v in enumerate(values)]


def test_window_means_average_the_boxes_inside_each_full_window() -> None:
    boxes = series([1.0, 3.0, 5.0, 7.0, 9.0])
    assert window_means(boxes, 2.0) == [Box(0.0, 2.0), Box(1.0, 4.0), Box(2.0, 6.0)]


def test_a_steady_host_gives_a_perfect_model_no_error() -> None:
    floor = perfect_model_floor(series([10.0] * 100), window_s=10.0, delay_s=(30.0, 60.0))
    assert floor is not None
    assert floor.median_abs_error == 0.0 and floor.within == 1.0 and floor.pairs > 0


def test_a_host_that_slows_down_by_half_puts_the_late_streams_outside_the_bound() -> None:
    boxes = series([10.0] * 50 + [15.0] * 50)  # from t = 50 s every call takes 1.5x as long
    early = perfect_model_floor(boxes, window_s=10.0, delay_s=(0.0, 10.0))
    late = perfect_model_floor(boxes, window_s=10.0, delay_s=(60.0, 80.0))
    assert early is not None and late is not None
    assert late.within < 0.5 < early.within
    assert late.median_abs_error == pytest.approx(0.5)


def test_a_series_shorter_than_the_delay_has_no_floor() -> None:
    assert perfect_model_floor(series([10.0] * 20), window_s=10.0, delay_s=(30.0, 60.0)) is None


def test_the_sampler_output_is_read_line_by_line_skipping_other_text() -> None:
    text = 'warning: something\n{"t": 0.5, "ms": 8.25}\n{"t": 1.0, "ms": 9.0}\n'
    assert parse_series(text) == [Box(0.5, 8.25), Box(1.0, 9.0)]


@pytest.mark.parametrize("argv", [["--seconds", "5"], ["--quotas", "0"], ["--quotas", "1.5"]])
def test_bad_arguments_are_refused_naming_the_problem(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "--seconds must be" in capsys.readouterr().err


def test_an_unknown_layer_kind_is_refused_naming_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--kind", "lstm", "--quotas"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "'lstm' is not a calibrated layer kind" in err and "bert_layer" in err


def test_a_saved_run_is_reported_again_without_measuring(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    steady = [[float(t), 10.0] for t in range(200)]
    drifting = [[float(t), 10.0 if t < 100 else 20.0] for t in range(200)]
    saved = tmp_path / "noise.json"
    saved.write_text(json.dumps({"kind": "bert_layer", "seconds": 200, "note": "",
                                 "series": {"full": steady, "0.2": drifting}}))
    assert main(["--from-json", str(saved), "--no-docs"]) == 0
    out = capsys.readouterr().out
    full = next(line for line in out.splitlines() if line.startswith("| full core"))
    quota = next(line for line in out.splitlines() if line.startswith("| 0.2 core (quota)"))
    assert "0%, 100% of" in full  # a steady host: a perfect model never misses
    assert "100% of" not in quota  # a host that halves its speed makes the late streams miss
