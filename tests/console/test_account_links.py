"""Small things of every page: a favicon, the admin site for admins, a password change for everyone."""


def test_it_links_the_admin_site_for_admins_and_password_change_for_everyone(client_as):
    admin_page = client_as("admin").get("/fleet/").content.decode()
    assert 'href="/admin/"' in admin_page and 'href="/accounts/password_change/"' in admin_page
    assert 'rel="icon"' in admin_page and "favicon.svg" in admin_page
    viewer_page = client_as("viewer").get("/fleet/").content.decode()
    assert 'href="/admin/"' not in viewer_page and 'href="/accounts/password_change/"' in viewer_page


def test_it_changes_a_password_on_a_page_of_the_console(client_as, users):
    client = client_as("viewer")
    page = client.get("/accounts/password_change/").content.decode()
    assert 'class="topbar"' in page and 'for="id_old_password"' in page
    response = client.post("/accounts/password_change/", {
        "old_password": "viewer-pw-123", "new_password1": "a-new-long-pass-2026", "new_password2": "a-new-long-pass-2026"},
        follow=True)
    assert "Your new password is in use" in response.content.decode()
    users["viewer"].refresh_from_db()
    assert users["viewer"].check_password("a-new-long-pass-2026")
