

def test_an_unclosed_raw_block_opening_drops_the_rest_in_one_match() -> None:
    # A `<script` with no `>` after it takes the rest of the document as one match (as a browser does),
    # so repeated openings cost one pass instead of one pass each.
    from ticketmail.parsing._flathtml import strip_raw_blocks

    assert strip_raw_blocks("<p>keep</p>" + "<script" * 1000) == "<p>keep</p> "
    assert strip_raw_blocks("a<script>x</script>b<style>y") == "a b "
