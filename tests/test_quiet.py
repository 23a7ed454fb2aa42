"""The commands keep LiteRT's and TensorFlow's INFO logs out of stderr (issue 19), and
nothing else: warnings, errors and our own lines pass unchanged and in order.

Each check runs in a child process, since the filter reroutes file descriptor 2."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from featherface.quiet import is_noise

XNNPACK_INFO = "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
ABSL_INFO = ("I0000 00:00:1796449609.679753    4072 port.cc:153] oneDNN custom operations are on. You may see "
             "slightly different numerical results due to floating-point round-off errors.")
ABSL_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
CPU_FEATURES_TAIL = ("To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild "
                     "TensorFlow with the appropriate compiler flags.")
KEPT = [
    "featherface: error: --bundle dist/pi4 has no manifest.json",
    "W0000 00:00:1796449609.679753    4072 op_level_cost_estimator.cc:699] Error in PredictCost() for the op",
    "E1205 06:01:02.123456    4072 interpreter.cc:12] something failed",
    "INFO: a line LiteRT never printed",
    "fps  31.6 | pre    5.9 ms | model    2.4 ms | post   0.3 ms",
]


@pytest.mark.parametrize("line", [XNNPACK_INFO, ABSL_INFO, ABSL_PREAMBLE, CPU_FEATURES_TAIL])
def test_runtime_info_lines_are_noise(line):
    assert is_noise(line.encode())


@pytest.mark.parametrize("line", KEPT)
def test_warnings_errors_and_our_lines_are_not_noise(line):
    assert not is_noise(line.encode())


def run_child(body: str) -> subprocess.CompletedProcess:
    script = "import os, sys\nfrom featherface.quiet import runtime_noise_filtered\n" + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)


def test_filter_drops_the_info_lines_written_to_fd_2_and_keeps_the_rest_in_order():
    noise = [XNNPACK_INFO, ABSL_PREAMBLE, ABSL_INFO, CPU_FEATURES_TAIL]
    interleaved = [line for pair in zip(noise + [""], KEPT) for line in pair if line]
    result = run_child(f"""
        with runtime_noise_filtered():
            for line in {interleaved!r}:
                if line.startswith(("INFO", "I0000", "WARNING", "To enable")):
                    os.write(2, (line + "\\n").encode())  # as C++ code writes: straight onto fd 2
                else:
                    print(line, file=sys.stderr)
            sys.stderr.write("a prompt without its newline")
        print("after the block", file=sys.stderr)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == KEPT + ["a prompt without its newlineafter the block"]


def test_filter_passes_a_child_processs_output_and_the_exit_status():
    result = run_child("""
        import subprocess
        with runtime_noise_filtered():
            subprocess.run([sys.executable, "-c", "import sys; print('from the child', file=sys.stderr)"])
            raise SystemExit(3)
    """)
    assert result.returncode == 3
    assert result.stderr.splitlines() == ["from the child"]


def test_litert_and_tensorflow_logs_are_silenced_for_a_real_interpreter(tmp_path):
    pytest.importorskip("tensorflow")
    pytest.importorskip("ai_edge_litert")
    model = tmp_path / "double.tflite"
    result = run_child(f"""
        with runtime_noise_filtered():
            import numpy as np
            import tensorflow as tf
            from ai_edge_litert.interpreter import Interpreter

            double = tf.function(lambda x: 2.0 * x, input_signature=[tf.TensorSpec([1, 8, 8, 3], tf.float32)])
            converter = tf.lite.TFLiteConverter.from_concrete_functions([double.get_concrete_function()], double)
            open({str(model)!r}, "wb").write(converter.convert())
            interpreter = Interpreter(model_path={str(model)!r}, num_threads=1)
            interpreter.allocate_tensors()  # LiteRT prints its XNNPACK line here
            interpreter.set_tensor(interpreter.get_input_details()[0]["index"], np.ones((1, 8, 8, 3), np.float32))
            interpreter.invoke()
            print("output", float(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).max()))
    """)
    assert result.returncode == 0, result.stderr
    assert "output 2.0" in result.stdout  # the interpreter really ran
    assert "XNNPACK" not in result.stderr
    assert not [line for line in result.stderr.splitlines() if is_noise(line.encode())]
    assert "port.cc" not in result.stderr and "absl::InitializeLog" not in result.stderr


def test_cli_errors_still_reach_stderr_through_the_filter(tmp_path):
    result = subprocess.run([sys.executable, "-m", "featherface.cli", "detect", "--bundle", str(tmp_path / "none"),
                             str(tmp_path / "photo.jpg")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith("featherface: error:")



def test_a_progress_bar_redrawing_its_line_passes_unchanged():
    script = ("import sys\nfrom featherface.quiet import runtime_noise_filtered\nwith runtime_noise_filtered():\n"
              "    for text in ('\\r 50%', '\\r100%', '\\n', 'done\\n'):\n        sys.stderr.write(text)\n        sys.stderr.flush()\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)  # bytes: no newline translation
    assert result.returncode == 0, result.stderr
    assert result.stderr == b"\r 50%\r100%\ndone\n"


def test_the_filter_still_knows_that_stderr_is_a_terminal():
    import os
    import pty

    leader, follower = pty.openpty()
    try:
        script = ("import sys\nfrom featherface.quiet import runtime_noise_filtered, stderr_is_terminal\n"
                  "with runtime_noise_filtered():\n    print(stderr_is_terminal(), sys.stderr.isatty())\n")
        result = subprocess.run([sys.executable, "-c", script], stderr=follower, stdout=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(follower)
        os.close(leader)
    assert result.returncode == 0
    assert result.stdout.split() == ["True", "False"]  # fd 2 is the filter's pipe; the user's stderr is a terminal
