// Key Vault holding every secret of the deployment, none of which is ever an app setting in clear or an output:
// - github-token: the token the github_dispatch stage dispatches the training workflow with (AL_GITHUB_TOKEN);
// - Label Studio's secrets, generated at deployment (main.bicep): its Django SECRET_KEY, the PostgreSQL
//   administrator password, the loop's service user's password and API token (the token is also the selector
//   and label apps' AL_LABEL_STUDIO_TOKEN);
// - labeling-storage-key, the labeling account's key (written by labeling-storage.bicep).
// The function apps' AL_* references are resolved by the platform with the apps' user-assigned identity, which
// may only read secrets (Key Vault Secrets User). Label Studio's container app reads its four secrets with its
// own identity, granted on those four secrets only.

param name string
param location string
param tags object = {}
param appPrincipalId string

@secure()
@description('GitHub token with actions:write on the training repository; empty: set the secret later.')
param githubToken string = ''

param secretName string = 'github-token'

@secure()
@description('Label Studio\'s Django SECRET_KEY (signs sessions and tokens).')
param labelStudioSecretKey string
@secure()
@description('PostgreSQL administrator password (Label Studio\'s POSTGRE_PASSWORD).')
param postgresAdminPassword string
@secure()
@description('Password of the loop\'s service user in Label Studio (LABEL_STUDIO_PASSWORD).')
param labelStudioPassword string
@secure()
@description('API token of that user (LABEL_STUDIO_USER_TOKEN; the apps\' AL_LABEL_STUDIO_TOKEN).')
param labelStudioToken string

@description('Principal id of Label Studio\'s user-assigned identity: Key Vault Secrets User on its four secrets.')
param labelStudioPrincipalId string

@description('Principal id of whoever runs the deployment (azd: AZURE_PRINCIPAL_ID); empty: no grant. It may read secrets: azd reads the generated ones back on the next provision, the postdeploy hook reads the token and the labeling key.')
param deployerPrincipalId string = ''
@allowed(['User', 'ServicePrincipal'])
param deployerPrincipalType string = 'User'

// The names main.parameters.json reads back with azd's secretOrRandomPassword (keep them in step).
var labelStudioSecretNames = {
  secretKey: 'label-studio-secret-key'
  dbPassword: 'label-studio-db-password'
  password: 'label-studio-password'
  token: 'label-studio-token'
}
// One order for the secrets and their role assignments below.
var labelStudioSecretOrder = [
  labelStudioSecretNames.secretKey
  labelStudioSecretNames.dbPassword
  labelStudioSecretNames.password
  labelStudioSecretNames.token
]

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    publicNetworkAccess: 'Enabled'
  }
}

// Created only when a token is given: an empty secret would overwrite one set by hand.
resource secret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(githubToken)) {
  parent: vault
  name: secretName
  properties: { value: githubToken, contentType: 'GitHub token (actions:write)' }
}

// Written on every provision with the same values (azd reads them back, main.parameters.json), so a
// re-provision rotates nothing: Label Studio applies the user's password and token only when it creates the
// user, on its first start.
resource labelStudioSecrets 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = [for s in [
  { name: labelStudioSecretNames.secretKey, value: labelStudioSecretKey, type: 'Label Studio SECRET_KEY' }
  { name: labelStudioSecretNames.dbPassword, value: postgresAdminPassword, type: 'PostgreSQL administrator password' }
  { name: labelStudioSecretNames.password, value: labelStudioPassword, type: 'Label Studio service user password' }
  { name: labelStudioSecretNames.token, value: labelStudioToken, type: 'Label Studio service user API token' }
]: {
  parent: vault
  name: s.name
  properties: { value: s.value, contentType: s.type }
}]

var keyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6'

resource secretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: vault
  name: guid(vault.id, appPrincipalId, keyVaultSecretsUser)
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
  }
}

// Secret scope: Label Studio's identity reads its own four secrets, not the GitHub token nor the storage key.
resource labelStudioReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (lsSecret, i) in labelStudioSecretOrder: {
  scope: labelStudioSecrets[i]
  name: guid(vault.id, lsSecret, labelStudioPrincipalId, keyVaultSecretsUser)
  properties: {
    principalId: labelStudioPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
  }
}]

// The person (or pipeline) deploying: read secrets (azd's secretOrRandomPassword on the next provision; the
// postdeploy hook's `az keyvault secret show`). Its principal type is the deployer's, not a service principal's.
resource deployerReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(deployerPrincipalId)) {
  scope: vault
  name: guid(vault.id, deployerPrincipalId, keyVaultSecretsUser)
  properties: {
    principalId: deployerPrincipalId
    principalType: deployerPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
  }
}

output name string = vault.name
// Versionless: the references follow secret rotation.
output githubTokenSecretUri string = '${vault.properties.vaultUri}secrets/${secretName}'
output labelStudioTokenSecretUri string = '${vault.properties.vaultUri}secrets/${labelStudioSecretNames.token}'
output labelStudioTokenSecretName string = labelStudioSecretNames.token
// Versionless secret URIs (not secrets) for the container app's Key Vault references.
output labelStudioSecretUris object = {
  secretKey: '${vault.properties.vaultUri}secrets/${labelStudioSecretNames.secretKey}'
  dbPassword: '${vault.properties.vaultUri}secrets/${labelStudioSecretNames.dbPassword}'
  password: '${vault.properties.vaultUri}secrets/${labelStudioSecretNames.password}'
  token: '${vault.properties.vaultUri}secrets/${labelStudioSecretNames.token}'
}
