"""The sequence nets: hand-written cells against torch's, manual == fused Recurrent, independence from padding,
chunked == whole, the Markov window and SequenceNet, on tiny sizes."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from lit_models.nets.markov import MarkovWindow
from lit_models.nets.recurrent import Recurrent, valid_steps
from lit_models.nets.recurrent_cells import GRUCell, LSTMCell, RNNCell
from lit_models.nets.sequence import SequenceNet, SequenceOutput, detach_state

KINDS = ("rnn", "lstm", "gru")
CELLS = {"rnn": RNNCell, "lstm": LSTMCell, "gru": GRUCell}
TORCH_CELLS = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}
D, H = 4, 5
LENGTHS = (5, 8, 3)  # unsorted: the fused path packs with enforce_sorted=False


pytestmark = pytest.mark.usefixtures("seeded_one_thread")


def padded(steps: int, lengths=LENGTHS, features: int | None = D, tokens: int = 11) -> torch.Tensor:
    """The same sequences (seeded) right-padded to ``steps`` with noise, which must not matter."""
    generator = torch.Generator().manual_seed(1)
    longest = max(lengths)
    if features is None:
        valid = torch.randint(tokens, (len(lengths), longest), generator=generator)
        noise = torch.randint(tokens, (len(lengths), steps), generator=torch.Generator().manual_seed(steps))
    else:
        valid = torch.randn(len(lengths), longest, features, generator=generator)
        noise = 100 * torch.randn(len(lengths), steps, features, generator=torch.Generator().manual_seed(steps))
    mask = valid_steps(torch.tensor(lengths), steps)
    out = noise.clone()
    out[mask] = valid[mask[:, :longest]]
    return out


def random_state(kind: str, layers: int, directions: int, batch: int = 3):
    shape = (layers * directions, batch, H)
    return (torch.randn(shape), torch.randn(shape)) if kind == "lstm" else torch.randn(shape)


def pair(kind: str, **kwargs) -> tuple[Recurrent, Recurrent]:
    """A fused Recurrent and a manual one loaded from its state dict (strict: same names and shapes)."""
    fused = Recurrent(kind, D, H, cell="fused", **kwargs)
    manual = Recurrent(kind, D, H, cell="manual", **kwargs)
    manual.load_state_dict(fused.state_dict(), strict=True)
    return fused, manual


@pytest.mark.parametrize("kind", KINDS)
def test_cells_match_torch(kind):
    ours = CELLS[kind](D, H)
    theirs = TORCH_CELLS[kind](D, H)
    theirs.load_state_dict(ours.state_dict(), strict=True)  # same names and shapes as torch's cell
    x = torch.randn(3, D)
    state = random_state(kind, 1, 1)
    state = (state[0][0], state[1][0]) if kind == "lstm" else state[0]  # N x H
    assert_close(ours(x, state), theirs(x, state))
    assert_close(ours(x), theirs(x))  # zero initial state


def test_gates_are_the_lecture_equations():
    x, h, c = torch.randn(3, D), torch.randn(3, H), torch.randn(3, H)

    rnn = RNNCell(D, H)
    expected = torch.tanh(x @ rnn.weight_ih.T + rnn.bias_ih + h @ rnn.weight_hh.T + rnn.bias_hh)
    assert_close(rnn.gates(x, h)["hidden"], expected)

    lstm = LSTMCell(D, H)
    g = lstm.gates(x, (h, c))
    assert set(g) == {"input", "forget", "candidate", "output", "cell", "hidden"}
    assert_close(g["cell"], g["forget"] * c + g["input"] * g["candidate"])
    assert_close(g["hidden"], g["output"] * torch.tanh(g["cell"]))
    rows = slice(H, 2 * H)  # torch's order: input, forget, candidate, output
    forget = torch.sigmoid(
        x @ lstm.weight_ih[rows].T + lstm.bias_ih[rows] + h @ lstm.weight_hh[rows].T + lstm.bias_hh[rows]
    )
    assert_close(g["forget"], forget)

    gru = GRUCell(D, H)
    g = gru.gates(x, h)
    assert set(g) == {"reset", "update", "candidate", "hidden"}
    assert_close(g["hidden"], (1 - g["update"]) * g["candidate"] + g["update"] * h)
    w_ih, w_hh, b_ih, b_hh = gru.weight_ih, gru.weight_hh, gru.bias_ih, gru.bias_hh
    reset = torch.sigmoid(x @ w_ih[:H].T + b_ih[:H] + h @ w_hh[:H].T + b_hh[:H])
    new = torch.tanh(x @ w_ih[2 * H :].T + b_ih[2 * H :] + reset * (h @ w_hh[2 * H :].T + b_hh[2 * H :]))
    assert_close(g["reset"], reset)
    assert_close(g["candidate"], new)  # torch's form: reset after the recurrent product


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("lengths", [None, LENGTHS])
def test_manual_matches_fused(kind, bidirectional, lengths):
    fused, manual = pair(kind, num_layers=2, bidirectional=bidirectional)
    directions = 2 if bidirectional else 1
    torch_keys = getattr(nn, kind.upper())(D, H, 2, bidirectional=bidirectional).state_dict()
    assert list(manual.state_dict()) == [f"rnn.{key}" for key in torch_keys]
    x = padded(8)
    state = random_state(kind, 2, directions)
    lengths = None if lengths is None else torch.tensor(lengths)
    out_fused, state_fused = fused(x, lengths, state)
    out_manual, state_manual = manual(x, lengths, state)
    assert out_manual.shape == (3, 8, H * directions)
    assert_close(out_manual, out_fused)
    assert_close(state_manual, state_fused)
    if lengths is not None:
        padding = ~valid_steps(lengths, 8)
        assert out_fused[padding].abs().max() == 0 and out_manual[padding].abs().max() == 0


@pytest.mark.parametrize("kind", KINDS)
def test_cell_of_a_layer_steps_like_the_fused_net(kind):
    """Recurrent.layer_cell(layer, direction): a copy of those weights whose steps give the fused net's outputs."""
    fused, _ = pair(kind, bidirectional=True)
    x = padded(8)
    outputs, _ = fused(x)  # N x T x 2H: forward half first
    for direction, steps in ((0, range(8)), (1, range(7, -1, -1))):
        cell, state, hidden = fused.layer_cell(0, direction), None, {}
        for t in steps:
            state = cell(x[:, t], state)
            hidden[t] = state[0] if kind == "lstm" else state
        assert_close(torch.stack([hidden[t] for t in range(8)], 1), outputs[..., direction * H : (direction + 1) * H])
    deep = Recurrent(kind, D, H, num_layers=2, bidirectional=True)
    assert deep.layer_cell(1, 1).weight_ih.shape[1] == 2 * H  # layer 1 reads both directions of layer 0
    with pytest.raises(ValueError, match=r"2 layer\(s\) and 2 direction\(s\); got layer 2"):
        deep.layer_cell(2)


def test_manual_and_fused_gradients_match():
    fused, manual = pair("lstm", num_layers=2, bidirectional=True)
    lengths = torch.tensor(LENGTHS)
    weights = torch.randn(3, 8, 2 * H)  # a loss that weighs every output differently
    grads = []
    for net in (fused, manual):
        x = padded(8).requires_grad_()
        out, (h, c) = net(x, lengths)
        ((out * weights).sum() + h.square().sum() + c.sum()).backward()
        grads.append({"x": x.grad, **{name: p.grad for name, p in net.named_parameters()}})
    assert_close(grads[1], grads[0])
    assert grads[0]["x"][~valid_steps(lengths, 8)].abs().max() == 0  # padded inputs do not matter


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("cell", ["fused", "manual"])
def test_recurrent_ignores_padding(kind, cell):
    net = Recurrent(kind, D, H, num_layers=2, bidirectional=True, cell=cell)
    lengths = torch.tensor(LENGTHS)
    short_out, short_state = net(padded(8), lengths)
    long_out, long_state = net(padded(15), lengths)
    assert_close(long_out[:, :8], short_out)
    assert long_out[:, 8:].abs().max() == 0
    assert_close(long_state, short_state)


def test_markov_ignores_padding():
    net = MarkovWindow(D, window=3, hidden_size=H, num_layers=2)
    lengths = torch.tensor(LENGTHS)
    short_out, short_state = net(padded(8), lengths)
    long_out, long_state = net(padded(15), lengths)
    assert_close(long_out[:, :8], short_out)
    assert long_out[:, 8:].abs().max() == 0 and short_out[~valid_steps(lengths, 8)].abs().max() == 0
    assert_close(long_state, short_state)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"architecture": "gru", "bidirectional": True, "num_layers": 2},
        {"architecture": "lstm", "cell": "manual"},
        {"architecture": "markov", "window": 3},
        {"architecture": "rnn", "per_step": True},
        {"architecture": "markov", "per_step": True},
    ],
)
def test_sequence_net_ignores_padding(kwargs):
    net = SequenceNet(num_outputs=7, num_tokens=11, embedding_dim=D, hidden_size=H, **kwargs).eval()
    lengths = torch.tensor(LENGTHS)
    short = net(padded(8, features=None), lengths)
    long = net(padded(15, features=None), lengths)
    if kwargs.get("per_step"):
        valid = valid_steps(lengths, 8)
        assert short.outputs.shape == (3, 8, 7)
        assert_close(long.outputs[:, :8][valid], short.outputs[valid])
    else:
        assert short.outputs.shape == (3, 7)
        assert_close(long.outputs, short.outputs)
    assert_close(long.state, short.state)


def test_summary_is_each_directions_last_output():
    net = SequenceNet("gru", num_outputs=2, input_size=D, hidden_size=H, bidirectional=True)
    x, lengths = padded(8), torch.tensor(LENGTHS)
    encoded, _ = net.encoder(x, lengths)  # N x T x 2H
    # Forward half after the last valid step, backward half after reading step 0.
    summary = torch.stack(
        [torch.cat([encoded[n, length - 1, :H], encoded[n, 0, H:]]) for n, length in enumerate(LENGTHS)]
    )
    assert_close(net(x, lengths).outputs, net.head(summary))


def run_in_chunks(net, x: torch.Tensor, sizes: tuple[int, ...]):
    outputs, state = [], None
    for chunk in x.split(sizes, dim=1):
        out, state = net(chunk, None, state)
        outputs.append(out)
        state = detach_state(state)
    return torch.cat(outputs, 1), state


@pytest.mark.parametrize(("kind", "cell"), [("rnn", "fused"), ("lstm", "fused"), ("gru", "fused"), ("lstm", "manual")])
def test_recurrent_chunks_equal_whole(kind, cell):
    net = Recurrent(kind, D, H, num_layers=2, cell=cell)
    x = torch.randn(2, 12, D)
    whole_out, whole_state = net(x)
    chunk_out, chunk_state = run_in_chunks(net, x, (4, 5, 3))
    assert_close(chunk_out, whole_out)
    assert_close(chunk_state, whole_state)


def test_markov_chunks_equal_whole():
    net = MarkovWindow(D, window=4, hidden_size=H)
    x = torch.randn(2, 12, D)
    whole_out, whole_state = net(x)
    chunk_out, chunk_state = run_in_chunks(net, x, (2, 1, 5, 4))  # chunks shorter than window - 1 too
    assert_close(chunk_out, whole_out)
    assert_close(chunk_state, whole_state)
    assert_close(whole_state, x[:, -3:])


def test_language_model_chunks_equal_whole():
    net = SequenceNet("lstm", num_outputs=11, num_tokens=11, embedding_dim=D, hidden_size=H, per_step=True)
    tokens = torch.randint(11, (2, 12))
    whole = net(tokens)
    outputs, state = [], None
    for chunk in tokens.split(5, dim=1):
        result = net(chunk, state=state)
        outputs.append(result.outputs)
        state = net.detach_state(result.state)
        assert not any(part.requires_grad for part in state)
    assert_close(torch.cat(outputs, 1), whole.outputs)


def test_markov_window_and_state():
    net = MarkovWindow(D, window=3, hidden_size=H)
    x = torch.randn(2, 6, D)
    out, state = net(x)
    zero = torch.zeros(2, D)
    assert_close(out[:, 0], net.mlp(torch.cat([zero, zero, x[:, 0]], 1)))  # zeros before the start
    assert_close(out[:, 4], net.mlp(torch.cat([x[:, 2], x[:, 3], x[:, 4]], 1)))  # oldest step first
    # A chunk where sequence 1 has one valid step: its state reaches back into the carried one.
    following = torch.randn(2, 4, D)
    _, new_state = net(following, torch.tensor([4, 1]), state)
    assert_close(new_state[0], following[0, 2:])
    assert_close(new_state[1], torch.stack([x[1, 5], following[1, 0]]))


def test_lstm_forget_bias_initialisation():
    net = Recurrent("lstm", D, H, num_layers=2, bidirectional=True, forget_bias=1.0)
    for suffix in net.suffixes():
        bias_ih, bias_hh = getattr(net.rnn, f"bias_ih{suffix}"), getattr(net.rnn, f"bias_hh{suffix}")
        assert torch.equal(bias_ih[H : 2 * H], torch.ones(H)) and torch.equal(bias_hh[H : 2 * H], torch.zeros(H))
        others = torch.cat([bias_ih[:H], bias_ih[2 * H :], bias_hh[:H], bias_hh[2 * H :]])
        assert others.abs().max() <= H**-0.5 and others.std() > 0  # torch's U(-1/sqrt(H), 1/sqrt(H)) elsewhere
    assert torch.equal(LSTMCell(D, H).bias_ih[H : 2 * H], torch.ones(H))
    default = Recurrent("lstm", D, H, forget_bias=None)
    assert default.rnn.bias_ih_l0[H : 2 * H].abs().max() <= H**-0.5  # None keeps torch's init
    net = SequenceNet("lstm", 2, input_size=D, hidden_size=H, forget_bias=2.0)
    assert torch.equal(net.encoder.rnn.bias_ih_l0[H : 2 * H], torch.full((H,), 2.0))


def test_dropout_only_between_layers():
    x = torch.randn(2, 6, D)
    one_layer = Recurrent("gru", D, H, dropout=0.5, cell="manual")
    assert_close(one_layer.train()(x)[0], one_layer.eval()(x)[0])  # nothing after the last layer
    two_layers = Recurrent("gru", D, H, num_layers=2, dropout=0.5, cell="manual")
    assert not torch.allclose(two_layers.train()(x)[0], two_layers.eval()(x)[0])


@pytest.mark.parametrize(
    ("build", "name"),
    [
        (lambda: Recurrent("lstmm", D, H), "kind"),
        (lambda: Recurrent("gru", D, 0), "hidden_size"),
        (lambda: Recurrent("gru", 0, H), "input_size"),
        (lambda: Recurrent("rnn", D, H, num_layers=0), "num_layers"),
        (lambda: Recurrent("rnn", D, H, dropout=1.0), "dropout"),
        (lambda: Recurrent("rnn", D, H, cell="cudnn"), "cell"),
        (lambda: RNNCell(0, H), "input_size"),
        (lambda: MarkovWindow(D, 0, H), "window"),
        (lambda: MarkovWindow(D, 2, H, dropout=-0.1), "dropout"),
        (lambda: SequenceNet("transformer", 3, input_size=D), "architecture"),
        (lambda: SequenceNet("gru", 3), "num_tokens"),
        (lambda: SequenceNet("gru", 3, input_size=D, num_tokens=11), "input_size"),
        (lambda: SequenceNet("gru", 0, input_size=D), "num_outputs"),
        (lambda: SequenceNet("markov", 3, input_size=D, bidirectional=True), "bidirectional"),
        (lambda: SequenceNet("lstm", 11, num_tokens=11, bidirectional=True, per_step=True), "bidirectional"),
    ],
)
def test_bad_arguments_name_the_argument(build, name):
    with pytest.raises(ValueError, match=name):
        build()


@pytest.mark.parametrize("cell", ["fused", "manual"])
def test_bad_inputs(cell):
    net = Recurrent("lstm", D, H, cell=cell)
    x = torch.randn(3, 8, D)
    with pytest.raises(ValueError, match=r"lengths\[1\] = 0"):
        net(x, torch.tensor([3, 0, 2]))
    with pytest.raises(ValueError, match=r"lengths\[2\] = 9"):
        net(x, torch.tensor([3, 1, 9]))
    with pytest.raises(ValueError, match="integer"):
        net(x, torch.tensor([3.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="state"):
        net(x, None, torch.zeros(1, 3, H))  # an LSTM needs (h, c)
    with pytest.raises(ValueError, match="N x T x 4"):
        net(torch.randn(3, 8, D + 1))
    with pytest.raises(ValueError, match=r"lengths\[0\] = 0"):
        MarkovWindow(D, 2, H)(x, torch.tensor([0, 1, 2]))


@pytest.mark.parametrize(
    ("kwargs", "inputs", "outputs", "state"),
    [
        ({"architecture": "lstm", "num_tokens": 11, "per_step": True}, (3, 8), (3, 8, 11), [(1, 3, H), (1, 3, H)]),
        ({"architecture": "gru", "input_size": D, "bidirectional": True, "num_layers": 2}, (3, 8, D), (3, 11),
         (4, 3, H)),
        ({"architecture": "rnn", "input_size": D, "cell": "manual"}, (3, 8, D), (3, 11), (1, 3, H)),
        ({"architecture": "markov", "num_tokens": 11, "window": 3, "per_step": True}, (3, 8), (3, 8, 11), (3, 2, 6)),
    ],
)  # fmt: skip
def test_sequence_net_shapes(kwargs, inputs, outputs, state):
    net = SequenceNet(num_outputs=11, embedding_dim=6, hidden_size=H, dropout=0.1, **kwargs)
    x = torch.randint(11, inputs) if len(inputs) == 2 else torch.randn(inputs)
    result = net(x, torch.tensor(LENGTHS))
    assert isinstance(result, SequenceOutput)
    assert result.outputs.shape == outputs
    shapes = [tuple(part.shape) for part in result.state] if isinstance(state, list) else tuple(result.state.shape)
    assert shapes == state
    with pytest.raises(ValueError, match="token ids" if "num_tokens" in kwargs else "float features"):
        net(torch.randn(3, 8) if len(inputs) == 2 else torch.randint(11, (3, 8)))
